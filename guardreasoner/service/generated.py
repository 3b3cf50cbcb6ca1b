"""Pydantic models generated from the library's result dataclasses, so the service's responses (and /docs) are
the dataclasses' ``to_dict()`` by construction: a field or property added to ``GuardResult`` or ``Verdict``
appears in the schema without anyone restating it here.

A model holds the dataclass's fields (with their types and defaults) and its public properties (``to_dict()``
writes them too: ``labels``, ``is_harmful``, ``status``, ``recovered``, ``confidence``); a dataclass met in a
type (``dict[str, Verdict]``) becomes its own model. Extra keys are refused, so a ``to_dict()`` that writes a
key the class does not declare fails the service's tests instead of vanishing from its answers.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

_models: dict[type, type[BaseModel]] = {}


def model_of(cls: type, descriptions: dict[str, str] | None = None) -> type[BaseModel]:
    """The pydantic model (named as ``cls``) of the dataclass ``cls``. ``descriptions`` adds /docs text per
    attribute name; a name ``cls`` lacks is an error, so descriptions cannot outlive their fields."""
    if cls in _models:
        if descriptions:
            raise ValueError(f"{cls.__name__}'s model exists already: describe it before the models holding it")
        return _models[cls]
    descriptions = dict(descriptions or {})
    hints = typing.get_type_hints(cls)
    definitions: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        description = descriptions.pop(field.name, None)
        definitions[field.name] = (_substitute(hints[field.name]), _field_info(field, description))
    for name, prop in inspect.getmembers(cls, lambda member: isinstance(member, property)):
        if name.startswith("_") or name in definitions:
            continue
        returned = typing.get_type_hints(prop.fget).get("return", Any)
        description = descriptions.pop(name, None) or _first_line(prop.__doc__)
        definitions[name] = (_substitute(returned), Field(description=description))
    if descriptions:
        raise ValueError(f"descriptions for {sorted(descriptions)}, which {cls.__name__} does not have")
    model = create_model(cls.__name__, __config__=ConfigDict(extra="forbid"), __doc__=inspect.getdoc(cls),
                         **definitions)
    _models[cls] = model
    return model


def _field_info(field: dataclasses.Field, description: str | None):
    if field.default is not dataclasses.MISSING:
        return Field(field.default, description=description)
    if field.default_factory is not dataclasses.MISSING:
        return Field(default_factory=field.default_factory, description=description)
    return Field(description=description)


def _substitute(hint: Any) -> Any:
    """``hint`` with every dataclass in it replaced by its generated model."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return model_of(hint)
    args = typing.get_args(hint)
    if not args:
        return hint
    new_args = tuple(_substitute(arg) for arg in args)
    if new_args == args:
        return hint
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return functools.reduce(operator.or_, new_args)
    return origin[new_args]


def _first_line(doc: str | None) -> str | None:
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ") if doc else None
