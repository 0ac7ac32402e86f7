"""Test doubles for the adapter tests: an in-memory inbox and a scriptable platform API server.

The fake API is deliberately dumb: each request is recorded, and the reply is the next scripted
one for that method (matched on the last path segment) or the platform's default success. The
error envelopes the tests script are the ones in ../shared/reference/protocols.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.domain.events import Event

PAYLOADS = Path(__file__).parent.parent / "payloads"


def payload(platform: str, name: str) -> dict[str, Any]:
    data = json.loads((PAYLOADS / platform / f"{name}.json").read_text())
    assert isinstance(data, dict)
    return data


def payload_bytes(platform: str, name: str) -> bytes:
    return (PAYLOADS / platform / f"{name}.json").read_bytes()


class FakeInbox:
    """Dedupes on (channel, external_id) like the real one; can be told to fail."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.raws: list[Mapping[str, Any]] = []
        self.calls = 0
        self.fail: Exception | None = None
        self._seen: set[tuple[str, str]] = set()

    async def accept(self, events: Sequence[Event], raw: Mapping[str, Any]) -> int:
        return await self.accept_each([(event, raw) for event in events])

    async def accept_each(self, items: Sequence[tuple[Event, Mapping[str, Any]]]) -> int:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        added = 0
        for event, raw in items:
            key = (event.channel, event.external_id)
            if key in self._seen:
                continue
            self._seen.add(key)
            self.events.append(event)
            self.raws.append(raw)
            added += 1
        return added


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict → JSON, str → text
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Recorded:
    method: str
    path: str
    name: str  # last path segment, e.g. "sendMessage", "chat.postMessage", "messages"
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str]

    @property
    def params(self) -> dict[str, Any]:
        """JSON or form body (and query string) as one dict."""
        out: dict[str, Any] = dict(self.query)
        if self.body.startswith(b"{"):
            out.update(json.loads(self.body))
        elif self.body:
            ctype = self.headers.get("Content-Type", "")
            if "multipart" in ctype:
                out.update(_multipart_fields(self.body, ctype))
            else:
                out.update(dict(parse_qsl(self.body.decode(), keep_blank_values=True)))
        return out


def _multipart_fields(body: bytes, ctype: str) -> dict[str, str]:
    boundary = ctype.split("boundary=", 1)[1].strip('"').encode()
    out: dict[str, str] = {}
    for part in body.split(b"--" + boundary):
        if b'name="' not in part:
            continue
        head, _, value = part.partition(b"\r\n\r\n")
        name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
        out[name] = value.rstrip(b"\r\n").decode()
    return out


class FakeAPI:
    def __init__(self, default: Callable[[Recorded], Reply]) -> None:
        self.requests: list[Recorded] = []
        self.default = default
        self._script: dict[str, list[Reply]] = {}
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def start(self) -> str:
        await self.server.start_server()
        return str(self.server.make_url("")).rstrip("/")

    async def close(self) -> None:
        await self.server.close()

    def script(self, name: str, *replies: Reply) -> None:
        self._script.setdefault(name, []).extend(replies)

    def called(self, name: str) -> list[Recorded]:
        return [r for r in self.requests if r.name.lower() == name.lower()]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        import asyncio

        rec = Recorded(
            method=request.method,
            path=request.path,
            name=request.path.rstrip("/").rsplit("/", 1)[-1],
            headers=dict(request.headers),
            body=await request.read(),
            query=dict(request.query),
        )
        self.requests.append(rec)
        queue = self._script.get(rec.name)
        reply = queue.pop(0) if queue else self.default(rec)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if isinstance(reply.body, dict | list):
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        return web.Response(text=reply.body or "", status=reply.status, headers=reply.headers)
