"""The base of every JSON answer of the coordinators' API (:mod:`~mobilise.web.coordinator_api`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Answer"]


class Answer(BaseModel):
    """A body the API answers with: frozen, closed, every field required in its JSON Schema.

    Closed, and with every field present in the schema even when it has a default, so that
    the OpenAPI document (:mod:`~mobilise.web.openapi`) says exactly what a client gets.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_serialization_defaults_required=True,
    )
