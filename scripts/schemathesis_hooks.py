"""Schemathesis hooks for scripts/api-check.

schemathesis runs with every check, positive_data_acceptance included: a
schema-valid request must not be refused. The spec states every bound the
server enforces. Where the contract refuses a schema-valid request on purpose,
the operation's description says so, and `filter_failure` below accepts that
one refusal and nothing else.
"""

import json
import re
import uuid

import schemathesis

# The user the fuzzer's token is for (scripts/api-check mints it).
FUZZER = "fuzzer"
KEY = re.compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def map_query(ctx, query):
    # A long poll waits timeout_s (default 25) for an event that never comes here.
    if ctx.operation.path == "/webrtc/events":
        query = dict(query or {})
        t = query.get("timeout_s")
        if not isinstance(t, int):
            query["timeout_s"] = 1
        elif 0 <= t <= 60:
            query["timeout_s"] = min(t, 1)
    return query


@schemathesis.hook
def map_headers(ctx, headers):
    # A valid Idempotency-Key is made unique: the fuzzer draws the same few
    # keys for different bodies, which the contract refuses (422
    # idempotency_key_reused) on purpose. Invalid keys stay as drawn.
    if headers and isinstance(headers.get("Idempotency-Key"), str) and KEY.match(headers["Idempotency-Key"]):
        headers = dict(headers)
        headers["Idempotency-Key"] = str(uuid.uuid4())
    return headers


def _error(response):
    try:
        return json.loads(response.content or b"{}").get("error", {})
    except (ValueError, AttributeError):
        return {}


def _astral(value):
    return any(ord(c) > 0xFFFF for c in json.dumps(value, ensure_ascii=False))


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    """Keep every failure but the contract's documented refusals of schema-valid requests."""
    if getattr(failure, "code", None) != "ST202":
        return True
    path, err = case.operation.path, _error(response)
    code, status = err.get("code"), response.status_code
    # GET /ws without WebSocket upgrade headers: 400 (its description says so).
    if path == "/ws" and status == 400 and code == "bad_request":
        return False
    # Showing one's own camera: 400 cannot_show_self.
    if path == "/webrtc/cameraShow" and code == "cannot_show_self":
        return False
    # meta is at most 1 KiB serialized, which a schema cannot state: 413.
    if path == "/webrtc/cameraOn" and code == "payload_too_large":
        return False
    # The few astral invisible characters (tags, ...) the pattern leaves out.
    if code == "bad_request" and "invisible" in err.get("message", "") and _astral(case.body):
        return False
    # A name needs a letter or digit, which a portable pattern cannot state;
    # meta.name is held to the same rules as a member's name.
    body = case.body if isinstance(case.body, dict) else {}
    if code == "bad_request" and "letter or digit" in err.get("message", ""):
        name = body.get("name")
        meta = body.get("meta")
        if isinstance(name, str) and not any(c.isalnum() for c in name):
            return False
        if isinstance(meta, dict) and "name" in meta:
            return False
    # A key drawn again by the stateful phase for another body: on purpose.
    if code == "idempotency_key_reused":
        return False
    return True
