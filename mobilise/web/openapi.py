"""The OpenAPI 3.1 document of the coordinators' API, built from the models it sends and receives.

Served without authentication at ``GET /api/v1/openapi.json``. Request and response bodies
are the JSON Schemas of the pydantic models the routes use (:class:`~schemas.CaseUpdate`
for the request, :mod:`mobilise.web.cases_view` and :mod:`mobilise.web.coordinator_api`
for the answers), so the document cannot drift from the code; the conformance test
checks the running app against it with schemathesis.

The CaseUpdate schema is adapted for the API: ``published_by`` is optional (the token's
name fills it in), ``event_id`` has no default (leave it out instead), and ``country``
and ``issues`` list the values this deployment accepts.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from schemas import CaseUpdate, WaveCancellation, known_countries, known_interests
from schemas.api_token import TOKEN_ID_PATTERN

from .cases_view import CaseDetail, CaseList
from .coordinator_api import (
    IDEMPOTENCY_HEADER,
    MAX_API_BODY_BYTES,
    ApiError,
    NewToken,
    PublishAccepted,
    TokenInfo,
    TokenList,
    TokenRequest,
    WaveCancelAccepted,
    WaveCancelRequest,
)

__all__ = ["OPENAPI_PATH", "add_routes", "openapi_document"]

OPENAPI_PATH = "/api/v1/openapi.json"
"""Where the document is served."""

_REF = "#/components/schemas/{model}"
_SLUG = CaseUpdate.model_fields["case_id"].metadata[0].pattern
_WAVE_ID = WaveCancellation.model_fields["wave_id"].metadata[0].pattern


def _schema(model: type[BaseModel], mode: JsonSchemaMode, components: dict[str, Any]) -> dict[str, Any]:
    """``model``'s JSON Schema with its definitions moved into ``components``; a $ref to it."""
    schema = model.model_json_schema(mode=mode, ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _case_update_request(components: dict[str, Any]) -> dict[str, Any]:
    _schema(CaseUpdate, "validation", components)
    schema = copy.deepcopy(components.pop("CaseUpdate"))
    schema["title"] = "CaseUpdateRequest"
    schema["description"] = (
        "A case update to publish. `published_by` is the name of the token that publishes (leave "
        "it out); `event_id` is derived from the Idempotency-Key header, or else from the content, "
        "when left out; `region` is derived from `country`."
    )
    schema["required"] = [name for name in schema["required"] if name != "published_by"]
    properties = schema["properties"]
    properties["event_id"].pop("default", None)
    properties["country"]["enum"] = sorted(known_countries())
    properties["issues"]["items"]["enum"] = sorted(known_interests())
    for name in ("title", "summary"):
        properties[name]["propertyNames"]["pattern"] = "^[a-z]{2,3}$"
    instructions = components["ActionCall"]["properties"]["instructions"]
    instructions["propertyNames"]["pattern"] = "^[a-z]{2,3}$"
    components["CaseUpdateRequest"] = schema
    return {"$ref": _REF.format(model="CaseUpdateRequest")}


def _json_content(ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": ref}}


def _error_response(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": _json_content({"$ref": _REF.format(model="ApiError")}),
    }
    if headers:
        response["headers"] = headers
    return response


_ERRORS: dict[str, dict[str, Any]] = {
    "BadRequest": _error_response("The body is not valid JSON (`invalid_json`)."),
    "Unauthorized": _error_response(
        "No token, or one that is malformed, unknown or revoked (`unauthorized`).",
        **{"WWW-Authenticate": {"description": '`Bearer realm="mobilise"`', "schema": {"type": "string"}}},
    ),
    "Forbidden": _error_response("The token's role may not do this (`forbidden`)."),
    "NotFound": _error_response("No such case, token or route (`not_found`)."),
    "PayloadTooLarge": _error_response(
        f"The body is larger than {MAX_API_BODY_BYTES} bytes (`body_too_large`)."
    ),
    "UnsupportedMediaType": _error_response("The body is not `application/json` (`unsupported_media_type`)."),
    "UnprocessableEntity": _error_response(
        "The body (or the Idempotency-Key header, or a path parameter) is not valid; `fields` names "
        "each field at fault (`validation_failed`)."
    ),
    "ServiceUnavailable": _error_response(
        "Kafka did not acknowledge the write (`kafka_unavailable`: nothing is confirmed, retry), or the "
        "process is still reading its topics (`starting`).",
        **{
            "Retry-After": {
                "description": "Seconds to wait.",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        },
    ),
}


def _errors(*names: str) -> dict[str, Any]:
    codes = {
        "BadRequest": "400",
        "Unauthorized": "401",
        "Forbidden": "403",
        "NotFound": "404",
        "PayloadTooLarge": "413",
        "UnsupportedMediaType": "415",
        "UnprocessableEntity": "422",
        "ServiceUnavailable": "503",
    }
    return {codes[name]: {"$ref": f"#/components/responses/{name}"} for name in names}


def _ok(description: str, ref: dict[str, Any], **headers: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json_content(ref)}
    if headers:
        response["headers"] = headers
    return response


def _path_parameter(name: str, description: str, pattern: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
    }


_WRITE_ERRORS = (
    "BadRequest",
    "Unauthorized",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "UnprocessableEntity",
)


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API (the same for the life of the process)."""
    components: dict[str, Any] = {}
    case_update = _case_update_request(components)
    refs = {
        model.__name__: _schema(model, "serialization", components)
        for model in (
            ApiError,
            PublishAccepted,
            CaseList,
            CaseDetail,
            WaveCancelAccepted,
            NewToken,
            TokenInfo,
            TokenList,
        )
    }
    token_request = _schema(TokenRequest, "validation", components)
    wave_cancel = _schema(WaveCancelRequest, "validation", components)
    # The pattern is checked by WaveCancellation; said here so that clients (and the
    # conformance test) know it.
    components["WaveCancelRequest"]["properties"]["case_id"]["pattern"] = _SLUG
    idempotency = {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": False,
        "description": (
            "Names this publication (e.g. a UUID made once per update): retrying with the same key and "
            "the same body publishes the same event once; the same key with another body is refused (422). "
            "Without `event_id` in the body, the event id is derived from the token and this key."
        ),
        "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[!-~]+$"},
    }
    paths: dict[str, Any] = {
        "/api/v1/case-updates": {
            "post": {
                "operationId": "publishCaseUpdate",
                "summary": "Publish a case update",
                "description": (
                    "Validates the update, publishes it on `case-updates` with an audit record on `audit`, "
                    "and answers once Kafka acknowledged both."
                ),
                "parameters": [idempotency],
                "requestBody": {"required": True, "content": _json_content(case_update)},
                "responses": {
                    "202": _ok(
                        "Published (or already published under this Idempotency-Key).",
                        refs["PublishAccepted"],
                        Location={"description": "The case's page in the API.", "schema": {"type": "string"}},
                    ),
                    **_errors(*_WRITE_ERRORS, "ServiceUnavailable"),
                },
            }
        },
        "/api/v1/cases": {
            "get": {
                "operationId": "listCases",
                "summary": "Every case with its latest status and counts, most recently updated first",
                "responses": {
                    "200": _ok("The cases.", refs["CaseList"]),
                    **_errors("Unauthorized", "ServiceUnavailable"),
                },
            }
        },
        "/api/v1/cases/{case_id}": {
            "get": {
                "operationId": "showCase",
                "summary": "A case's timeline, its counts and the counters of each of its action calls",
                "description": (
                    "`counts`: matched, sent, failed, bounced, opened (null when the provider reported no "
                    "open) and acted (people who said they did one of its action calls). `actions`: per "
                    "action call (`action_id`), the alerts sent and opened for the updates carrying it, "
                    "the people who acted (once per person), the goal, `progress` (acted / goal) and "
                    "`by_region` (people who acted per UN M49 region of where they live, `unknown` if "
                    "they did not say)."
                ),
                "parameters": [_path_parameter("case_id", "The case.", _SLUG)],
                "responses": {
                    "200": _ok("The case.", refs["CaseDetail"]),
                    **_errors("Unauthorized", "NotFound", "ServiceUnavailable"),
                },
            }
        },
        "/api/v1/waves/{wave_id}/cancel": {
            "post": {
                "operationId": "cancelWave",
                "summary": "Call off a wave that has not gone out",
                "description": (
                    "Publishes a wave cancellation on every partition of `wave-cancellations` "
                    "(`cancelled_by` is the token's name), as `mobilise waves cancel` does, and answers "
                    "once Kafka acknowledged every copy. The alerts of the wave still held are dropped, "
                    "each with a `cancelled` delivery event; those already released stay sent. "
                    "Cancelling the same wave again is harmless and answered 202 again; an id no wave "
                    "has cancels nothing."
                ),
                "parameters": [
                    _path_parameter(
                        "wave_id",
                        "The wave: its `wave_id` in the action call, or the id `mobilise publish` printed.",
                        _WAVE_ID,
                    )
                ],
                "requestBody": {"required": True, "content": _json_content(wave_cancel)},
                "responses": {
                    "202": _ok("Cancelled (or cancelled again).", refs["WaveCancelAccepted"]),
                    # 404: a wave id that cannot be a path segment (empty, or with a slash).
                    **_errors(*_WRITE_ERRORS, "NotFound", "ServiceUnavailable"),
                },
            }
        },
        "/api/v1/tokens": {
            "post": {
                "operationId": "createToken",
                "summary": "Make an API token (admin)",
                "description": "The answer is the only time the token's text is shown.",
                "requestBody": {"required": True, "content": _json_content(token_request)},
                "responses": {
                    "201": _ok("The new token.", refs["NewToken"]),
                    **_errors(*_WRITE_ERRORS, "Forbidden", "ServiceUnavailable"),
                },
            },
            "get": {
                "operationId": "listTokens",
                "summary": "Every API token, revoked ones included (admin)",
                "responses": {
                    "200": _ok("The tokens.", refs["TokenList"]),
                    **_errors("Unauthorized", "Forbidden", "ServiceUnavailable"),
                },
            },
        },
        "/api/v1/tokens/{token_id}": {
            "delete": {
                "operationId": "revokeToken",
                "summary": "Revoke a token (admin); it stops working at once",
                "parameters": [_path_parameter("token_id", "The token's id.", TOKEN_ID_PATTERN)],
                "responses": {
                    "200": _ok("The revoked token.", refs["TokenInfo"]),
                    **_errors("Unauthorized", "Forbidden", "NotFound", "ServiceUnavailable"),
                },
            }
        },
        OPENAPI_PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {"description": "The OpenAPI document.", "content": {"application/json": {}}}
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mobilise coordinators' API",
            "version": "1",
            "description": (
                "Publish case updates, follow each case's status and the fate of its alerts, call off "
                "waves, and manage API tokens. Authenticate with `Authorization: Bearer mob_…`. Every "
                "error is JSON: "
                '`{"error", "detail", "fields": [{"loc", "msg"}]}`.'
            ),
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token, `mob_<token_id>_<secret>` (`mobilise tokens create`).",
                }
            },
            "schemas": components,
            "responses": _ERRORS,
        },
    }


async def _serve(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(), headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application) -> None:
    """Add ``GET /api/v1/openapi.json`` to ``app``."""
    app.router.add_get(OPENAPI_PATH, _serve)
