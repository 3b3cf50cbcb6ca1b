"""A small client for the guard service: ``GuardClient(url, api_key).classify(items)`` returns the library's
``GuardResult`` objects, as a local guard would."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import httpx

from .errors import GuardReasonerError
from .results import GuardResult


class GuardServiceError(GuardReasonerError, RuntimeError):
    """The service refused or failed a request; ``status`` is the HTTP status, ``detail`` its message."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def _item(item) -> dict:
    if isinstance(item, str):
        return {"prompt": item}
    return {"prompt": item["prompt"], "response": item.get("response") or None}


class GuardClient:
    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 300.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def _options(self, items: Iterable, max_new_tokens: int | None, thresholds: dict | None,
                 reasoning: str | None, operating_point: str | None = None) -> dict:
        body = {"items": [_item(item) for item in items]}
        if operating_point is not None:  # else the server's default point, if any
            body["operating_point"] = operating_point
        if reasoning is not None:  # else the server's default mode
            body["reasoning"] = reasoning
        if max_new_tokens is not None:
            body["max_new_tokens"] = max_new_tokens
        if thresholds:
            body["thresholds"] = thresholds
        return body

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise GuardServiceError(response.status_code, str(detail))

    def classify(self, items: Iterable, *, max_new_tokens: int | None = None, thresholds: dict | None = None,
                 reasoning: str | None = None, operating_point: str | None = None) -> list[GuardResult]:
        """Classify dicts with ``prompt`` and optional ``response`` (or plain prompt strings), in order.
        ``reasoning``: full, auto or off (default: the server's mode; GET /health lists what it offers);
        ``operating_point``: the name of one the server offers (GET /health, ``operating_points``)."""
        body = self._options(items, max_new_tokens, thresholds, reasoning, operating_point)
        response = self._http.post("/v1/classify", json=body)
        self._check(response)
        return [GuardResult.from_dict(result) for result in response.json()["results"]]

    def classify_one(self, prompt: str, response: str | None = None, **options) -> GuardResult:
        return self.classify([{"prompt": prompt, "response": response}], **options)[0]

    def stream(self, items: Iterable, **options) -> Iterator[tuple[str, dict]]:
        """The server-sent events of /v1/classify/stream as (event, data) pairs: screen (mode auto), delta,
        result, done, error."""
        body = self._options(items, options.get("max_new_tokens"), options.get("thresholds"),
                             options.get("reasoning"), options.get("operating_point"))
        with self._http.stream("POST", "/v1/classify/stream", json=body) as response:
            if not response.is_success:
                response.read()
                self._check(response)
            event = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: "):
                    yield event or "message", json.loads(line[len("data: "):])

    def health(self) -> dict:
        response = self._http.get("/health")
        self._check(response)
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GuardClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
