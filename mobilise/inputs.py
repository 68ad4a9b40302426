"""Reading case updates from files people write (JSON or YAML), with errors naming the field."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schemas import CaseUpdate

from .errors import SkippableError

__all__ = ["InvalidInput", "read_case_updates"]


class InvalidInput(SkippableError):
    """A file or request that cannot be accepted; the message names every bad field."""


def _json_default(value: Any) -> str:
    # YAML turns unquoted timestamps into datetimes; the strict JSON validation wants text.
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot represent {type(value).__name__} as JSON")


def read_case_updates(path: Path) -> list[CaseUpdate]:
    """Parse and validate every update in ``path`` (one object or a list).

    Raises:
        InvalidInput: the file cannot be read or parsed, or any update is invalid. All
            problems are reported at once, each as ``update N: field: message``.

    """
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(
            f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from exc
    items = data if isinstance(data, list) else [data]
    if not items:
        raise InvalidInput(f"{path} holds no case update")
    updates, problems = [], []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            problems.append(f"update {number}: expected an object with the case update's fields")
            continue
        try:
            updates.append(CaseUpdate.model_validate_json(json.dumps(item, default=_json_default)))
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                field = ".".join(str(p) for p in error["loc"]) or "(update)"
                problems.append(f"update {number}: {field}: {error['msg']}")
    if problems:
        raise InvalidInput(f"{path} was not published:\n  " + "\n  ".join(problems))
    return updates
