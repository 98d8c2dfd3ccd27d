"""``GET /openapi.json``: the operator API described as OpenAPI 3.1, written as data.

Why data and not generated: the handlers are plain Starlette functions, and
a hand-kept document says what a caller may rely on (including the error
statuses, which no signature shows).  ``tests/unit/test_openapi.py``
validates it with ``openapi-spec-validator`` and checks that every ``/api``
route of the app is in it, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Json = dict[str, Any]


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Json, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(*statuses: int) -> Json:
    return {str(s): {"$ref": f"#/components/responses/{s}"} for s in (401, 403, 404, *statuses)}


def _operation(summary: str, responses: Json, *, body: Json | None = None,
               body_required: bool = True, op_id: str) -> Json:
    out: Json = {"summary": summary, "operationId": op_id, "responses": responses,
                 "security": [{"adminToken": []}]}
    if body is not None:
        out["requestBody"] = {"required": body_required,
                              "content": {"application/json": {"schema": body}}}
    return out


_STREAM_PARAM = {"name": "stream", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.~-]{1,128}$"}}
_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_NULLABLE_STR = {"type": ["string", "null"]}

SCHEMAS: Json = {
    "Problem": {
        "type": "object", "description": "RFC 9457 problem details",
        "required": ["type", "title", "status", "detail"],
        "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                       "status": {"type": "integer"}, "detail": {"type": "string"},
                       "request_id": {"type": "string"}},
    },
    "Session": {
        "type": "object", "required": ["id", "kind", "stream", "state", "node"],
        "properties": {
            "id": {"type": "string"}, "kind": {"enum": ["publisher", "viewer"]},
            "stream": {"type": "string"}, "state": {"type": "string"}, "node": _NULLABLE_STR,
            "since_s": {"type": "number"}, "mode": {"type": "string"},
            "codecs": {"type": "object", "additionalProperties": _NULLABLE_STR},
            "bitrate": {"type": ["integer", "null"], "description": "bit/s into Janus"},
            "stats": {"type": ["array", "null"], "items": _ref("MediumStats")},
        },
    },
    "MediumStats": {
        "type": "object", "description": "One medium, from Janus's admin handle_info",
        "properties": {
            "mid": {"type": "string"}, "kind": {"type": "string"}, "codec": _NULLABLE_STR,
            "packets_in": {"type": "integer"}, "packets_out": {"type": "integer"},
            "bitrate_in": {"type": "integer"}, "bitrate_out": {"type": "integer"},
            "packets_lost": {"type": "integer"}, "rtt_ms": {"type": ["integer", "null"]},
            "nacks_in": {"type": "integer"}, "nacks_out": {"type": "integer"},
            "plis": {"type": ["integer", "null"]},
        },
    },
    "Stream": {
        "type": "object", "required": ["name", "live", "publisher", "viewers"],
        "properties": {
            "name": {"type": "string"},
            "defined_by": {"enum": ["api", "settings", None]},
            "viewer_policy": {"enum": ["open", "token", "jwt", None]},
            "live": {"type": "boolean"},
            "publisher": {"oneOf": [_ref("Session"), {"type": "null"}]},
            "viewers": {"type": "object", "properties": {
                "total": {"type": "integer"},
                "by_node": {"type": "object", "additionalProperties": {"type": "integer"}}}},
            "publish_key": {"type": "string", "description": "only in the answer to a create"},
            "viewer_token": {"type": "string", "description": "only in the answer to a create"},
            "jwt_secret": {"type": "string", "description": "only in the answer to a create"},
        },
    },
    "NewStream": {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_.~-]{1,128}$"},
            "publish_key": {"type": "string", "minLength": 16,
                            "description": "generated when left out"},
            "viewer_policy": {"enum": ["open", "token", "jwt"], "default": "open"},
            "viewer_token": {"type": "string", "minLength": 16,
                             "description": "policy token; generated when left out"},
            "jwt_secret": {"type": "string", "minLength": 16,
                           "description": "policy jwt: HS256 secret; generated when left out"},
        },
    },
}

_PROBLEM = {"content": {"application/problem+json": {"schema": _ref("Problem")}}}

DOCUMENT: Json = {
    "openapi": "3.1.0",
    "info": {"title": "whip-gateway operator API", "version": "1",
             "description": "Streams and sessions of a WHIP/WHEP gateway. Every call needs "
                            "Authorization: Bearer <admin_token>; without admin_token set, "
                            "the routes answer 404."},
    "components": {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        "schemas": SCHEMAS,
        "responses": {
            "400": {"description": "Malformed body", **_PROBLEM},
            "401": {"description": "No admin token", **_PROBLEM},
            "403": {"description": "Wrong admin token", **_PROBLEM},
            "404": {"description": "Admin API off, or no such thing", **_PROBLEM},
            "409": {"description": "Already exists", **_PROBLEM},
        },
    },
    "paths": {
        "/api/streams": {
            "get": _operation(
                "Every stream: defined through the API, live, or watched (with an "
                "Authorization header; without one this is the public listing)",
                {"200": _json({"type": "object", "properties": {
                    "streams": {"type": "array", "items": _ref("Stream")}}}, "The streams"),
                 **_problems()}, op_id="listStreams"),
            "post": _operation(
                "Define a stream (kept in memory) with its publish key and viewer policy",
                {"201": _json(_ref("Stream"), "Created; the answer carries the credentials"),
                 **_problems(400, 409)},
                body=_ref("NewStream"), op_id="createStream"),
        },
        "/api/streams/{stream}": {
            "parameters": [_STREAM_PARAM],
            "get": _operation("One stream",
                              {"200": _json(_ref("Stream"), "The stream"), **_problems()},
                              op_id="getStream"),
            "delete": _operation(
                "Forget the stream; its publisher and every viewer are ended",
                {"204": {"description": "Deleted"}, **_problems()}, op_id="deleteStream"),
        },
        "/api/streams/{stream}/rotate-key": {
            "parameters": [_STREAM_PARAM],
            "post": _operation(
                "A new publish key (given, or generated); a live publisher keeps going",
                {"200": _json({"type": "object", "properties": {
                    "name": {"type": "string"}, "publish_key": {"type": "string"}}},
                    "The new key"), **_problems(400)},
                body={"type": "object", "additionalProperties": False, "properties": {
                    "publish_key": {"type": "string", "minLength": 16}}},
                body_required=False, op_id="rotateKey"),
        },
        "/api/sessions": {
            "get": _operation("Every publisher and viewer session",
                              {"200": _json({"type": "object", "properties": {
                                  "sessions": {"type": "array", "items": _ref("Session")}}},
                                  "The sessions"), **_problems()},
                              op_id="listSessions"),
        },
        "/api/sessions/{id}": {
            "parameters": [_ID_PARAM],
            "get": _operation("One session with RTC statistics from Janus",
                              {"200": _json(_ref("Session"), "The session"), **_problems()},
                              op_id="getSession"),
            "delete": _operation("End the session (kick)",
                                 {"204": {"description": "Ended"}, **_problems()},
                                 op_id="kickSession"),
        },
    },
}


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(DOCUMENT)


routes = [Route("/openapi.json", openapi, methods=["GET"])]
