"""A search engine for argilla-server that answers from the server's own database.

Argilla needs Elasticsearch or OpenSearch, which a laptop, a CI runner or this project's test machines may not
have. argilla-server looks engines up in its ``SearchEngine`` registry by the ``ARGILLA_SEARCH_ENGINE`` setting;
this one registers as ``sql``. The database already holds every record, response and suggestion, so indexing is
a no-op and a search loads the dataset's records and filters, sorts and pages them in Python, with the same
semantics as the Elasticsearch engine (a "pending" response status means "no response from that user").
That is fine for loopback tests and small local review rounds (thousands of records); production deployments
use Elasticsearch. Runs inside argilla-server's own virtualenv (see scripts/argilla.sh).
"""

from __future__ import annotations

from typing import Any

from argilla_server.database import AsyncSessionLocal
from argilla_server.enums import ResponseStatusFilter, SortOrder
from argilla_server.models import Record, Suggestion
from argilla_server.search_engine import (
    AndFilter,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataFilterScope,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    SuggestionFilterScope,
    TermsFilter,
    TermsMetrics,
    TextQuery,
)
from sqlalchemy import select
from sqlalchemy.orm import selectinload


def _value(value):
    return getattr(value, "value", value)  # enums to their text, as Elasticsearch stores them


def _document(record: Record) -> dict:
    return {
        "id": record.id,
        "status": _value(record.status),
        "inserted_at": record.inserted_at,
        "updated_at": record.updated_at,
        "fields": record.fields or {},
        "metadata": record.metadata_ or {},
        "responses": [
            {"user_id": response.user_id, "status": _value(response.status),
             **{question: answer.get("value") for question, answer in (response.values or {}).items()}}
            for response in record.responses
        ],
        "suggestions": {
            suggestion.question.name: {"value": suggestion.value, "score": suggestion.score,
                                       "agent": suggestion.agent, "type": _value(suggestion.type)}
            for suggestion in record.suggestions
        },
    }


def _matches(value: Any, condition: TermsFilter | RangeFilter) -> bool:
    values = value if isinstance(value, list) else [value]
    if isinstance(condition, TermsFilter):
        wanted = {str(v) for v in condition.values}
        return any(str(_value(v)) in wanted for v in values if v is not None)
    numbers = [v for v in values if isinstance(v, (int, float)) or hasattr(v, "timestamp")]
    numbers = [v.timestamp() if hasattr(v, "timestamp") else v for v in numbers]
    return any((condition.ge is None or n >= condition.ge) and (condition.le is None or n <= condition.le)
               for n in numbers)


def _responses_of(document: dict, scope: ResponseFilterScope) -> list[dict]:
    return [r for r in document["responses"] if scope.user is None or r["user_id"] == scope.user.id]


def _keep(document: dict, condition) -> bool:
    if condition is None:
        return True
    if isinstance(condition, AndFilter):
        return all(_keep(document, part) for part in condition.filters)
    scope = condition.scope
    if isinstance(scope, ResponseFilterScope):
        responses = _responses_of(document, scope)
        if scope.question:
            return any(_matches(r.get(scope.question), condition) for r in responses)
        if scope.property == "status" and isinstance(condition, TermsFilter):
            statuses = {_value(v) for v in condition.values}
            pending = ResponseStatusFilter.pending.value in statuses
            return (pending and not responses) or any(r["status"] in statuses for r in responses)
        raise ValueError(f"cannot filter on response scope {scope}")
    if isinstance(scope, MetadataFilterScope):
        return _matches(document["metadata"].get(scope.metadata_property), condition)
    if isinstance(scope, SuggestionFilterScope):
        suggestion = document["suggestions"].get(scope.question)
        return suggestion is not None and _matches(suggestion.get(scope.property), condition)
    if isinstance(scope, RecordFilterScope):
        return _matches(document.get(scope.property), condition)
    raise ValueError(f"cannot filter on scope {scope}")


def _sort_value(document: dict, scope) -> Any:
    if isinstance(scope, MetadataFilterScope):
        return document["metadata"].get(scope.metadata_property)
    if isinstance(scope, SuggestionFilterScope):
        return (document["suggestions"].get(scope.question) or {}).get(scope.property)
    if isinstance(scope, ResponseFilterScope):
        values = [r.get(scope.question or scope.property) for r in _responses_of(document, scope)]
        return values[0] if values else None
    return document.get(scope.property)


def _text_score(document: dict, query: TextQuery | str | None) -> float | None:
    if query is None:
        return None
    text, field = (query, None) if isinstance(query, str) else (query.q, query.field)
    if not text or text == "*":
        return None
    haystack = [document["fields"].get(field)] if field else list(document["fields"].values())
    words = text.lower().split()
    hits = sum(str(value).lower().count(word) for value in haystack if value is not None for word in words)
    return float(hits) if all(any(word in str(v).lower() for v in haystack if v) for word in words) else 0.0


@SearchEngine.register(engine_name="sql")
class SQLSearchEngine(SearchEngine):
    @classmethod
    async def new_instance(cls) -> SQLSearchEngine:
        return cls()

    async def close(self):
        pass

    async def ping(self) -> bool:
        return True

    async def info(self) -> dict:
        return {"engine": "sql", "note": "argilla-server's own database, searched in Python"}

    # The database is the index: nothing to create, update or delete.
    async def create_index(self, dataset):
        pass

    async def delete_index(self, dataset):
        pass

    async def configure_metadata_property(self, dataset, metadata_property):
        pass

    async def index_records(self, dataset, records):
        pass

    async def partial_record_update(self, record, **update):
        pass

    async def delete_records(self, dataset, records):
        pass

    async def update_record_response(self, response):
        pass

    async def delete_record_response(self, response):
        pass

    async def update_record_suggestion(self, suggestion):
        pass

    async def delete_record_suggestion(self, suggestion):
        pass

    async def _documents(self, dataset_id) -> list[dict]:
        async with AsyncSessionLocal() as db:
            result = await db.execute(
                select(Record)
                .where(Record.dataset_id == dataset_id)
                .options(selectinload(Record.responses),
                         selectinload(Record.suggestions).selectinload(Suggestion.question))
                .order_by(Record.inserted_at, Record.id)
            )
            return [_document(record) for record in result.scalars().all()]

    async def get_dataset_progress(self, dataset) -> dict:
        if dataset.is_draft:
            return {}
        statuses = [document["status"] for document in await self._documents(dataset.id)]
        return {"total": len(statuses), **{status: statuses.count(status) for status in set(statuses)}}

    async def get_dataset_user_progress(self, dataset, user) -> dict:
        if dataset.is_draft:
            return {}
        statuses = [r["status"] for d in await self._documents(dataset.id) for r in d["responses"]
                    if r["user_id"] == user.id]
        return {"total": len(statuses), **{status: statuses.count(status) for status in set(statuses)}}

    async def search(self, dataset, query=None, filter=None, sort=None, offset=0, limit=100, user_id=None):
        found = []
        for document in await self._documents(dataset.id):
            score = _text_score(document, query)
            if score != 0.0 and _keep(document, filter):
                found.append((document, score))
        if query is not None and any(score for _, score in found):
            found.sort(key=lambda item: -(item[1] or 0.0))
        for order in reversed(sort or []):  # stable sorts, last key first
            keyed = [(_sort_value(item[0], order.scope), item) for item in found]
            present = sorted((pair for pair in keyed if pair[0] is not None), key=lambda pair: pair[0],
                             reverse=order.order == SortOrder.desc)
            # Elasticsearch puts missing values last either way.
            found = [item for _, item in present] + [item for value, item in keyed if value is None]
        page = found[offset : offset + limit]
        return SearchResponses(items=[SearchResponseItem(record_id=d["id"], score=s) for d, s in page],
                               total=len(found))

    async def similarity_search(self, dataset, vector_settings, value=None, record=None, query=None, filter=None,
                                max_results=100, order=None, threshold=None):
        raise NotImplementedError("vector search needs Elasticsearch or OpenSearch; the sql engine has none")

    async def compute_metrics_for(self, metadata_property):
        documents = await self._documents(metadata_property.dataset_id)
        values = [d["metadata"].get(metadata_property.name) for d in documents]
        values = [v for v in values if v is not None]
        kind = _value(metadata_property.type)
        if kind == "terms":
            flat = [str(x) for v in values for x in (v if isinstance(v, list) else [v])]
            counts = {term: flat.count(term) for term in dict.fromkeys(flat)}
            return TermsMetrics(total=len(flat), values=[TermsMetrics.TermCount(term=t, count=c)
                                                         for t, c in sorted(counts.items(), key=lambda i: -i[1])])
        metrics = IntegerMetadataMetrics if kind == "integer" else FloatMetadataMetrics
        return metrics(min=min(values) if values else None, max=max(values) if values else None)
