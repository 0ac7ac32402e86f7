"""What the three stand-ins share: rate buckets, injected failures, request bodies, deliveries."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

log = logging.getLogger("sandbox")


class Bucket:
    """A token bucket: ``burst`` requests at once, then ``per_second``.

    The platforms publish their limits, not their algorithms; a bucket is the usual stand-in
    (the reference notes say so) and is what makes a 429 reachable from a real desk.
    """

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take a token; 0 when there was one, else how many seconds until there is."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second


class Buckets:
    def __init__(self, per_second: float, burst: int) -> None:
        self._rate = (per_second, burst)
        self._by_key: dict[str, Bucket] = {}
        self.refused = 0  # calls answered 429 because the caller outpaced the limit

    def take(self, key: str) -> float:
        bucket = self._by_key.get(key)
        if bucket is None:
            bucket = self._by_key[key] = Bucket(*self._rate)
        wait = bucket.take()
        if wait > 0:
            self.refused += 1
        return wait


@dataclass
class Failure:
    status: int
    retry_after: float | None
    error: str | None
    times: int


class Failures:
    """Failures a test or the sandbox page asks for: the next N calls of a method fail."""

    def __init__(self) -> None:
        self._pending: dict[str, Failure] = {}

    def add(
        self,
        method: str,
        *,
        status: int,
        retry_after: float | None = None,
        error: str | None = None,
        times: int = 1,
    ) -> None:
        self._pending[method.lower()] = Failure(status, retry_after, error, times)

    def take(self, method: str) -> Failure | None:
        failure = self._pending.get(method.lower())
        if failure is None:
            return None
        failure.times -= 1
        if failure.times <= 0:
            del self._pending[method.lower()]
        return failure


async def request_params(request: web.Request) -> dict[str, Any]:
    """Parameters however a client sends them: query string, form, multipart or JSON.

    Form values that hold JSON (Telegram's ``reply_markup``) stay strings, as on the wire.
    """
    params: dict[str, Any] = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return params
    ctype = request.content_type
    if ctype == "application/json":
        raw = await request.read()
        if raw.strip():
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object")
            params.update(data)
    elif ctype == "multipart/form-data":
        form = await request.post()
        params.update({k: v if isinstance(v, str) else "<file>" for k, v in form.items()})
    else:
        raw = await request.read()
        params.update(parse_qsl(raw.decode(), keep_blank_values=True))
    return params


async def multipart_files(request: web.Request) -> dict[str, tuple[str, bytes]]:
    """The file parts of a multipart request (field → (file name, bytes)); aiohttp caches the
    parsed form, so this may follow :func:`request_params`."""
    form = await request.post()
    found: dict[str, tuple[str, bytes]] = {}
    for key, value in form.items():
        if isinstance(value, web.FileField):
            value.file.seek(0)
            found[key] = (value.filename or key, value.file.read())
    return found


def json_field(value: Any) -> Any:
    """A nested object sent as a JSON string inside a form field, or as JSON already."""
    if isinstance(value, str):
        return json.loads(value)
    return value


class Deliverer:
    """Delivers webhooks to the desk the way the platforms do: in the background, retried.

    ``send`` makes one attempt and returns the status (0 for no answer); failed attempts are
    retried after ``delays`` with ``retry_headers(n)`` added, like Slack's X-Slack-Retry-Num.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.attempts: list[tuple[str, int]] = []  # (url, status) of every attempt

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def attempt(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        try:
            async with self._client().post(url, data=body, headers=dict(headers)) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("sandbox.delivery_failed url=%s error=%s", url, type(exc).__name__)
            status, text = 0, ""
        self.attempts.append((url, status))
        return status, text

    async def deliver(
        self,
        url: str,
        make: Callable[[int], tuple[bytes, dict[str, str]]],
        delays: list[float],
    ) -> int:
        """First attempt now (its status is returned); retries go on in the background."""
        body, headers = make(0)
        status, _ = await self.attempt(url, body, headers)
        if not 200 <= status < 300 and delays:
            self._spawn(self._retry(url, make, delays))
        return status

    async def _retry(
        self, url: str, make: Callable[[int], tuple[bytes, dict[str, str]]], delays: list[float]
    ) -> None:
        for n, delay in enumerate(delays, start=1):
            await asyncio.sleep(delay)
            body, headers = make(n)
            status, _ = await self.attempt(url, body, headers)
            if 200 <= status < 300:
                return
        log.warning("sandbox.delivery_dropped url=%s after=%d retries", url, len(delays))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def spawn(self, coro: Awaitable[None]) -> None:
        self._spawn(coro)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


class Ids:
    """A counter the platform never rewinds: ``next()`` gives the next id.

    Unlike ``itertools.count`` it can say where it is (to be saved) and be moved forward past
    ids the desk has already seen (:meth:`past`), so a restarted stand-in never reuses an id.
    """

    def __init__(self, start: int) -> None:
        self.next_value = start

    def __iter__(self) -> Ids:
        return self

    def __next__(self) -> int:
        value = self.next_value
        self.next_value += 1
        return value

    def past(self, seen: int) -> None:
        """Make sure the next id is above ``seen``."""
        self.next_value = max(self.next_value, seen + 1)


class Waiter:
    """Wakes whoever waits for something the stand-in recorded (a sent message, an update).

    ``on_change`` (set by :class:`sandbox.StandIns` when it keeps a state file) is told too, so
    the state is saved whenever a stand-in records something.
    """

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self.on_change: Callable[[], None] | None = None

    async def notify(self) -> None:
        if self.on_change is not None:
            self.on_change()
        async with self._cond:
            self._cond.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(predicate), timeout)
            except TimeoutError:
                return predicate()
        return True
