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
_NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}

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
    "Node": {
        "type": "object", "required": ["name", "role", "healthy", "draining", "load", "capacity"],
        "properties": {
            "name": {"type": "string"}, "role": {"enum": ["ingest", "egress", "both"]},
            "region": _NULLABLE_STR, "healthy": {"type": "boolean"},
            "draining": {"type": "boolean"}, "version": _NULLABLE_STR,
            "load": {"type": "object", "properties": {
                "viewers": {"type": "integer"}, "out_bitrate": {"type": "integer"},
                "fill": {"type": "number"}, "handles": {"type": "integer"},
                "janus_handles": {"type": ["integer", "null"]}}},
            "capacity": {"type": "object", "properties": {
                "max_viewers": {"type": ["integer", "null"]},
                "max_out_bitrate": {"type": ["integer", "null"]}}},
        },
    },
    "NewNode": {
        "type": "object", "required": ["url"],
        "description": "A node's settings, as in the janus list of the configuration file "
                       "(every field of that list is taken, the plugins' admin key too)",
        "properties": {
            "url": {"type": "string"}, "name": {"type": "string"},
            "role": {"enum": ["ingest", "egress", "both"]}, "region": {"type": "string"},
            "admin_url": {"type": "string"}, "admin_secret": {"type": "string"},
            "api_secret": {"type": "string"},
            "max_viewers": {"type": "integer"}, "max_out_bitrate": {"type": "integer"},
        },
    },
    "Recording": {
        "type": "object", "required": ["id", "stream", "state"],
        "properties": {
            "id": {"type": "string"}, "stream": {"type": "string"},
            "state": {"enum": ["recording", "processing", "ready", "failed"]},
            "started_at": _NULLABLE_STR, "ended_at": _NULLABLE_STR,
            "duration_s": {"type": ["number", "null"]}, "size": {"type": ["integer", "null"]},
            "codecs": {"type": "object", "additionalProperties": _NULLABLE_STR},
            "container": _NULLABLE_STR, "file": _NULLABLE_STR, "error": _NULLABLE_STR,
            "progress": {"type": ["number", "null"]}, "step": _NULLABLE_STR,
            "media": {"type": "string", "description": "the download URL"},
        },
    },
    "RecordedStreams": {
        "type": "object", "required": ["record"],
        "properties": {"record": {"type": "array", "items": {"type": "string"},
                                  "description": 'stream names; "*" records every stream'}},
    },
}

_PROBLEM = {"content": {"application/problem+json": {"schema": _ref("Problem")}}}

DOCUMENT: Json = {
    "openapi": "3.1.0",
    "info": {"title": "whip-gateway operator API", "version": "1",
             "description": "Streams, sessions, nodes and recordings of a WHIP/WHEP gateway. Every call needs "
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
            "409": {"description": "Conflict: it exists already, is not ready, or is in use", **_PROBLEM},
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
        "/api/nodes": {
            "get": _operation("Every Janus node with health, version, load and capacity",
                              {"200": _json({"type": "object", "properties": {
                                  "nodes": {"type": "array", "items": _ref("Node")}}},
                                  "The nodes"), **_problems()}, op_id="listNodes"),
            "post": _operation("Add a node at run time", {
                "201": _json(_ref("Node"), "Added; Location names it"), **_problems(400, 409)},
                body=_ref("NewNode"), op_id="addNode"),
        },
        "/api/nodes/{name}": {
            "parameters": [_NAME_PARAM],
            "get": _operation("One node", {"200": _json(_ref("Node"), "The node"),
                                           **_problems()}, op_id="getNode"),
            "delete": _operation(
                "Remove the node; its viewers are told to reconnect and land elsewhere",
                {"204": {"description": "Removed"}, **_problems(409)}, op_id="removeNode"),
        },
        "/api/nodes/{name}/drain": {
            "parameters": [_NAME_PARAM],
            "post": _operation("No new sessions on the node; its viewers stay until they leave",
                               {"200": _json(_ref("Node"), "The node"), **_problems()},
                               op_id="drainNode"),
        },
        "/api/nodes/{name}/undrain": {
            "parameters": [_NAME_PARAM],
            "post": _operation("The node takes new sessions again",
                               {"200": _json(_ref("Node"), "The node"), **_problems()},
                               op_id="undrainNode"),
        },
        "/api/recordings": {
            "get": _operation("Every recording", {"200": _json({"type": "object", "properties": {
                "recordings": {"type": "array", "items": _ref("Recording")}}}, "The recordings"),
                **_problems()}, op_id="listRecordings"),
        },
        "/api/recordings/{id}": {
            "parameters": [_ID_PARAM],
            "get": _operation("One recording", {"200": _json(_ref("Recording"), "The record"),
                                                **_problems()}, op_id="getRecording"),
            "delete": _operation("Delete the recording and its files",
                                 {"204": {"description": "Deleted"}, **_problems(409)},
                                 op_id="deleteRecording"),
        },
        "/api/recordings/{id}/media": {
            "parameters": [_ID_PARAM],
            "get": _operation(
                "The file (MP4 or WebM); Range requests give 206, past the end 416",
                {"200": {"description": "The whole file"},
                 "206": {"description": "The requested range"},
                 "416": {"description": "Range not satisfiable", **_PROBLEM},
                 **_problems(409)}, op_id="downloadRecording"),
        },
        "/api/record": {
            "get": _operation("Which streams are recorded",
                              {"200": _json(_ref("RecordedStreams"), "The stream names"),
                               **_problems()}, op_id="getRecorded"),
            "put": _operation("Set which streams are recorded (new sessions follow it)",
                              {"200": _json(_ref("RecordedStreams"), "The stream names"),
                               **_problems(400)}, body=_ref("RecordedStreams"),
                              op_id="setRecorded"),
        },
    },
}


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(DOCUMENT)


routes = [Route("/openapi.json", openapi, methods=["GET"])]
