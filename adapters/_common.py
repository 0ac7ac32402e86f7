"""Small pieces every webhook adapter shares: bounded body reads, JSON parsing, stable ids."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web


class BodyTooLarge(Exception):
    pass


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read the whole body, to its end; raise :class:`BodyTooLarge` past ``limit`` bytes.

    A body may arrive in many TCP pieces with gaps between them, so this reads until the end
    of the body (Content-Length reached, or the last chunk of a chunked body) rather than
    taking what has arrived so far. A chunked body has no length up front: it is counted as it
    comes and refused as soon as it passes the limit, without buffering the rest.

    The desk's server also sets ``client_max_size``, but that only guards ``request.read()``;
    the adapter enforces its own documented limit so that it holds whatever application it is
    installed in.
    """
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    body = bytearray()
    # aiohttp's StreamReader has no bounded read-to-EOF, hence the loop.
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def too_large(limit: int) -> web.Response:
    return web.json_response({"error": f"body larger than {limit} bytes"}, status=413)


def bad_request(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=400)


def unavailable(reason: str = "temporarily unavailable, retry later") -> web.Response:
    # 503 (not 500): the payload was fine, we could not store it; the platform retries.
    return web.json_response({"error": reason}, status=503, headers={"Retry-After": "1"})


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Decode a JSON object or raise ValueError (malformed JSON, not an object, bad UTF-8)."""
    data = json.loads(body.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("JSON body is not an object")
    return data


def digest_id(prefix: str, payload: Mapping[str, Any] | bytes) -> str:
    """A stable dedupe id for payloads that carry none of their own (so retries still dedupe)."""
    if isinstance(payload, bytes):
        raw = payload
    else:
        raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return f"{prefix}:{hashlib.sha256(raw).hexdigest()[:40]}"


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_str(value: Any) -> str:
    if value is None:
        return ""
    return str(value)
