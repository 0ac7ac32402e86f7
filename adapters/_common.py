"""Small pieces every webhook adapter shares: bounded body reads, JSON parsing, stable ids."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bot.delivery.inbox import storable


class BodyRefused(Exception):
    """A body the desk will not read: its answer is a 4xx, never a 5xx the platform retries."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def response(self) -> web.Response:
        return web.json_response({"error": self.reason}, status=self.status)


class BodyTooLarge(BodyRefused):
    def __init__(self) -> None:
        super().__init__(413, "body too large")


# No platform compresses a webhook body, and a signature over compressed bytes would have to
# be checked before decompressing (aiohttp decompresses as it reads): refused up front.
PLAIN_ENCODINGS = ("", "identity")


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
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in PLAIN_ENCODINGS:
        raise BodyRefused(415, f"Content-Encoding {encoding[:40]!r} is not accepted")
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    body = bytearray()
    try:
        # aiohttp's StreamReader has no bounded read-to-EOF, hence the loop.
        while chunk := await request.content.readany():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge
    except (aiohttp.ClientPayloadError, HttpProcessingError) as exc:
        # A broken chunked encoding and the like: the server's parser gave up on the body.
        raise BodyRefused(400, f"unreadable body: {type(exc).__name__}") from None
    return bytes(body)


def too_large(limit: int) -> web.Response:
    return web.json_response({"error": f"body larger than {limit} bytes"}, status=413)


def bad_request(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=400)


def unavailable(reason: str = "temporarily unavailable, retry later") -> web.Response:
    # 503 (not 500): the payload was fine, we could not store it; the platform retries.
    return web.json_response({"error": reason}, status=503, headers={"Retry-After": "1"})


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(text: str | bytes) -> Any:
    """Decode JSON from a stranger, as :func:`bot.delivery.inbox.storable` data, or raise
    ValueError.

    Refused: bad UTF-8, malformed JSON, ``NaN``/``Infinity`` (not JSON, and PostgreSQL's JSON
    refuses them), nesting deeper than the decoder's recursion or ``bot.delivery.inbox.MAX_DEPTH``.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        data = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return storable(data)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Decode a JSON object or raise ValueError (malformed JSON, not an object, bad UTF-8,
    too deep); strings come back cleaned of what the database refuses (see ``storable``)."""
    data = load_json(body)
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
