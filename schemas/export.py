"""JSON Schema files for integrators who produce or consume the topics in other languages."""

from __future__ import annotations

import json
from pathlib import Path

from ._base import Event
from .action_taken import ActionTaken
from .alert import Alert, AlertBatch
from .api_token import ApiToken
from .audit import AuditRecord
from .case_update import CaseUpdate
from .dead_letter import DeadLetter
from .delivery import DeliveryEvent
from .subscription import Subscription
from .suppression import Suppression
from .wave import WaveCancellation

__all__ = ["EXPORTED", "export_json_schemas"]

EXPORTED: dict[str, type[Event]] = {
    "case-update": CaseUpdate,
    "subscription": Subscription,
    "suppression": Suppression,
    "alert": Alert,
    "alert-batch": AlertBatch,
    "delivery-event": DeliveryEvent,
    "dead-letter": DeadLetter,
    "api-token": ApiToken,
    "audit-record": AuditRecord,
    "action-taken": ActionTaken,
    "wave-cancellation": WaveCancellation,
}
"""File stem → model, one file per record contract (the subscriptions topic carries two)."""


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``<stem>.v<version>.schema.json`` for every exported model; return the paths.

    The schemas describe the JSON on the wire (validation mode: what a producer must send).
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, model in EXPORTED.items():
        version = model.model_fields["schema_version"].default
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"urn:mobilise:schema:{stem}:v{version}"
        path = directory / f"{stem}.v{version}.schema.json"
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", "utf-8")
        written.append(path)
    return written
