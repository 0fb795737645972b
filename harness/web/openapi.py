"""The OpenAPI 3.1 description of the lab's HTTP API, served at /api/v1/openapi.json.

Why written out by hand rather than generated: the JSON shapes are the API's promise to test suites in any
language, so they are stated once here, next to docs/web-api.md, and a test keeps this description's paths and
the app's routes the same set (a route added without its description, or the reverse, fails it).
"""

from __future__ import annotations

import copy
from typing import Any

VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required if required is not None else list(props)}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_NSTR = {"type": ["string", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": {**_STR, "description": "the HTTP status as a short code, e.g. not_found"},
                   "message": {**_STR, "description": "what went wrong, in one sentence"}}),
    "Address": _obj({"name": _STR, "address": _STR}),
    "Index": _obj({
        "api": {"const": "v1"},
        "domains": {"type": "array", "items": _obj({"name": _STR, "role": _STR,
                                                    "users": {"type": "array", "items": _STR}})},
        "links": {"type": "object", "additionalProperties": _STR},
    }),
    "User": _obj({
        "address": _STR, "domain": _STR, "role": {**_STR, "description": "the domain's role"},
        "folders": {"type": "object", "description": "folder name -> counts",
                    "additionalProperties": _obj({"messages": _INT, "unseen": _INT})},
    }),
    "UserList": _obj({"users": {"type": "array", "items": _ref("User")}}),
    "NewUser": _obj({"address": _STR, "password": _STR}),
    "MessageSummary": _obj({
        "message_id": {**_NSTR, "description": "the Message-ID header, angle brackets included"},
        "uid": _INT, "folder": _STR, "subject": _STR,
        "from": {"oneOf": [_ref("Address"), {"type": "null"}]},
        "to": {"type": "array", "items": _ref("Address")},
        "cc": {"type": "array", "items": _ref("Address")},
        "date": {**_NSTR, "description": "the Date header, ISO 8601"},
        "received": {**_STR, "description": "when the store received it (IMAP INTERNALDATE), ISO 8601"},
        "size": _INT, "flags": {"type": "array", "items": _STR}, "seen": _BOOL,
        "snippet": {**_STR, "description": "the first 200 characters of the text"},
    }),
    "MessageList": _obj({
        "user": _STR, "folder": _STR, "q": _STR, "offset": _INT, "limit": _INT, "count": _INT,
        "more": {**_BOOL, "description": "more matches exist past this page"},
        "messages": {"type": "array", "items": _ref("MessageSummary")},
    }),
    "Message": {"allOf": [_ref("MessageSummary"), _obj({
        "headers": {"type": "array", "items": {"type": "array", "prefixItems": [_STR, _STR],
                                               "minItems": 2, "maxItems": 2}},
        "text": {**_STR, "description": "the text/plain body, or text made from the HTML"},
        "html": {**_NSTR, "description": "the HTML body as sent, not sanitised"},
        "attachments": {"type": "array", "items": _obj({"filename": _NSTR, "content_type": _STR,
                                                        "size": _INT})},
        "body_parsed": {**_BOOL, "description": "false for a message over 10 MiB (headers only)"},
        "locations": {"type": "array", "items": _obj({"folder": _STR, "uid": _INT})},
    })]},
    "Deleted": _obj({"user": _STR, "message_id": _STR, "count": _INT,
                     "deleted": {"type": "array", "items": _obj({"folder": _STR, "uid": _INT})}}),
    "Purged": _obj({"deleted": _INT,
                    "users": {"type": "object", "description": "user -> folder -> messages deleted",
                              "additionalProperties": {"type": "object", "additionalProperties": _INT}}}),
    "Recall": _obj({
        "original": _STR, "sender": _STR, "subject": _STR, "mode": _STR, "action": _STR, "requested_at": _STR,
        "statuses": {"type": "object", "additionalProperties": _STR},
        "refused": {"type": "array", "items": _STR},
        "instructions": {"type": "array", "items": {"type": "object"}},
        "reports": {"type": "array", "items": {"type": "object"}},
        "events": {"type": "array", "items": _INT},
    }),
    "RecallList": _obj({"recalls": {"type": "array", "items": _ref("Recall")}}),
    "RecallDetail": {"allOf": [_ref("Recall"), _obj({"parsed_reports": {"type": "array", "items": _obj({
        "kind": _STR, "user": _STR, "mailbox": _STR, "uid": _INT, "message_id": _NSTR, "found": _BOOL,
        "content": {"type": ["object", "null"]}, "error": _NSTR})}})]},
    "Events": _obj({"events": {"type": "array", "items": {"type": "object", "required": ["seq", "at", "kind",
                                                                                         "domain", "text"]}},
                    "last_seq": _INT, "more": _BOOL}),
}

_ERRORS = {
    "400": "bad parameters or body", "401": "missing or wrong token", "404": "no such user, folder or message",
    "408": "nothing matched within the timeout", "409": "the user exists already",
    "503": "too many waits open, or the lab is stopping",
}


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False
           ) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


_USER = _param("user", "query", _STR, "the account's address", required=True)
_USER_STAR = _param("user", "query", _STR, "the account's address, or * for every user", required=True)
_FOLDER = _param("folder", "query", {**_STR, "default": "INBOX"}, "a folder name, or * for every folder")
_FOLDER_ANY = _param("folder", "query", _STR, "only this folder (default: any folder)")
_MID = _param("message_id", "path", _STR, "a Message-ID, with or without <>, URL-encoded", required=True)
_Q = _param("q", "query", _STR, "search: words, \"phrases\", from:, to:, subject:, is:seen, is:unread, "
            "has:attachment")


def _op(op_id: str, summary: str, ok: str, schema: dict[str, Any] | None, errors: tuple[str, ...],
        params: list[dict[str, Any]] | None = None, media: str = "application/json") -> dict[str, Any]:
    responses: dict[str, Any] = {ok: {"description": summary}}
    if schema is not None:
        responses[ok]["content"] = {media: {"schema": schema}}
    for code in ("401", *errors):
        responses[code] = {"description": _ERRORS[code],
                           "content": {"application/json": {"schema": _ref("Error")}}}
    out: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        out["parameters"] = params
    return out


PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/": {"get": _op("index", "links and the lab's domains", "200", _ref("Index"), ())},
    "/api/v1/openapi.json": {"get": _op("openapi", "this description", "200", {"type": "object"}, ())},
    "/api/v1/users": {
        "get": _op("listUsers", "every account with its folders' counts", "200", _ref("UserList"), ("404",),
                   [_param("domain", "query", _STR, "only this domain")]),
        "post": {**_op("addUser", "add an account to a running domain", "201", _ref("User"),
                       ("400", "404", "409")),
                 "requestBody": {"required": True,
                                 "content": {"application/json": {"schema": _ref("NewUser")}}}},
    },
    "/api/v1/messages": {
        "get": _op("listMessages", "message summaries, newest first, optionally searched", "200",
                   _ref("MessageList"), ("400", "404"),
                   [_USER, _FOLDER, _Q,
                    _param("limit", "query", {**_INT, "minimum": 1, "maximum": 1000, "default": 50}, "page size"),
                    _param("offset", "query", {**_INT, "minimum": 0, "default": 0}, "matches to skip")]),
        "delete": _op("purgeMessages", "expunge every message of a folder (or every folder) of a user or of all",
                      "200", _ref("Purged"), ("400", "404"), [_USER_STAR, _FOLDER]),
    },
    "/api/v1/messages/{message_id}": {
        "get": _op("getMessage", "one message by Message-ID", "200", _ref("Message"), ("400", "404"),
                   [_MID, _USER, _FOLDER_ANY]),
        "delete": _op("deleteMessage", "expunge every copy of a message (in one folder or all)", "200",
                      _ref("Deleted"), ("400", "404"), [_MID, _USER, _FOLDER_ANY]),
    },
    "/api/v1/messages/{message_id}/raw": {
        "get": _op("getRawMessage", "the message's source as stored", "200", {"type": "string"},
                   ("400", "404"), [_MID, _USER, _FOLDER_ANY], media="message/rfc822"),
    },
    "/api/v1/wait": {
        "get": _op("waitForMessage", "long poll: the newest matching message, as soon as one is stored", "200",
                   _ref("MessageSummary"), ("400", "404", "408", "503"),
                   [_USER, _FOLDER, _Q,
                    _param("timeout", "query", {"type": "number", "minimum": 0, "maximum": 300, "default": 10},
                           "seconds to wait")]),
    },
    "/api/v1/recalls": {"get": _op("listRecalls", "every recall the lab saw, newest first", "200",
                                   _ref("RecallList"), ())},
    "/api/v1/recalls/{message_id}": {
        "get": _op("getRecall", "one recall by the original's Message-ID, with its reports parsed", "200",
                   _ref("RecallDetail"), ("400", "404"), [_MID]),
    },
    "/api/v1/events": {
        "get": _op("listEvents", "timeline entries after a sequence number", "200", _ref("Events"), ("400",),
                   [_param("since", "query", {**_INT, "minimum": 0, "default": 0}, "entries after this seq"),
                    _param("limit", "query", {**_INT, "minimum": 1, "maximum": 1000, "default": 500},
                           "entries at most")]),
    },
}


def describe(server_url: str | None = None) -> dict[str, Any]:
    """The whole description; `server_url` (the lab's web address) fills `servers`."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "recall-lab HTTP API", "version": VERSION,
                 "description": "Read, search, wait for and delete a lab's mail; users, recalls, the timeline. "
                                "The lab administrator's view: no user password is needed. See docs/web-api.md."},
        "paths": copy.deepcopy(PATHS),
        "components": {"schemas": copy.deepcopy(SCHEMAS),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "the lab's web token (lab.web.token)"}}},
        "security": [{"bearer": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
