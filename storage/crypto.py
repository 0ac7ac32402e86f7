"""Encryption at rest of what identifies or quotes a customer (issue 26, point 2).

A value is sealed with AES-GCM (``cryptography``) under the desk's data key and stored as
``dk1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>``: it carries the id of its key, so a
desk reads values under its current key and under the old keys it still lists while
``deskbot keys rotate`` re-encrypts them. The key id is authenticated too (the associated
data), so a value cannot be moved under another key's id.

The keyring is process-wide (:func:`install`, at start-up from the settings). With none, the
column types below pass values through as plain text, exactly as before; values are read
back whether they were stored clear or sealed, so a desk can turn encryption on and the
rotation seals the old clear rows too.

Equality lookups cannot compare those ciphertexts (each sealing uses a fresh nonce). The
platform addresses the desk finds and orders customers by (a WhatsApp number, an e-mail
address, a Telegram chat: identities' ``external_id`` and ``chat_id``, tickets' ``chat_id``,
the inbox's ``conversation``, the outbox's ``destination_key``…) are typed :class:`Address`:
sealed *deterministically* with AES-SIV (RFC 5297, ``cryptography``'s ``AESSIV``) as
``da1:<key id>:<base64url(synthetic IV ‖ ciphertext)>``. The synthetic IV is a keyed hash
(AES-CMAC based S2V) of the address: the same address gives the same value under one key, so
the database compares, indexes and groups them, and the value opens back to the address where
the desk sends to it. The SIV key is derived from the data key with HKDF (no extra setting).
While old keys are still read, an equality lookup asks for the address under each key
(``IN (…)``); ``deskbot keys rotate`` rewrites each stored address under the current key.
Agents' Slack keys (``slack:…``) name tickets, channels and users, not customers: they stay
clear.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import JSON, Text, TypeDecorator, type_coerce
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import operators

PREFIX = "dk1:"
SEALED = re.compile(r"dk1:([0-9a-f]{8}):([A-Za-z0-9_-]{38,})")
NONCE = 12
ADDRESS_PREFIX = "da1:"
ADDRESS = re.compile(r"da1:([0-9a-f]{8}):([A-Za-z0-9_-]{40,})")
# Addresses are padded to a multiple of this before sealing, so a stored value tells little
# of the address's length. NUL never occurs in a stored address (bot/delivery/inbox.storable).
ADDRESS_PAD = 32
# What stays clear in an Address column: the agents' side (tickets, channels, Slack users).
CLEAR_PREFIXES = ("slack:",)


class DataKeyError(ValueError):
    """A data key that cannot be used, or a value that cannot be opened: never silent."""


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_key() -> str:
    """A fresh 256-bit data key, as ``DESK_DATA_KEY`` takes it (base64url, 43 characters)."""
    return _b64(os.urandom(32))


def parse_key(text: str, name: str = "DESK_DATA_KEY") -> bytes:
    try:
        raw = _b64decode(text.strip())
    except (binascii.Error, ValueError):
        raise DataKeyError(f"{name} is not base64 (make one with `deskbot keys new`)") from None
    if len(raw) != 32:
        raise DataKeyError(
            f"{name} must be 32 bytes in base64 (make one with `deskbot keys new`), "
            f"got {len(raw)} bytes"
        )
    return raw


def key_id(raw: bytes) -> str:
    """8 hex digits naming a key without revealing it."""
    return hashlib.sha256(b"deskbot data key id\x00" + raw).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class _Key:
    id: str
    aead: AESGCM
    siv: AESSIV  # deterministic: the addresses (see the module's docstring)
    raw: bytes = field(repr=False)  # never printed; only to hand the keyring to a worker


def _key(raw: bytes) -> _Key:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=64, salt=None, info=b"deskbot address key v1"
    ).derive(raw)
    return _Key(key_id(raw), AESGCM(raw), AESSIV(derived), raw)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class Keyring:
    """The current key (what is written) and the old ones (still read)."""

    current: _Key
    old: tuple[_Key, ...] = ()
    _by_id: dict[str, _Key] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, current: str, old: Iterable[str] = ()) -> Keyring:
        cur = _key(parse_key(current))
        olds = tuple(
            _key(parse_key(k, "DESK_DATA_OLD_KEYS")) for k in old if k.strip() and k != current
        )
        ring = cls(cur, olds)
        for k in (*olds, cur):
            ring._by_id[k.id] = k
        return ring

    def __reduce__(self) -> tuple[Any, tuple[str, tuple[str, ...]]]:
        # A worker process (bot/reports/offloop.py) reads what the desk does: it is handed
        # the keys themselves (AESGCM objects do not pickle), over the pool's private pipe.
        return (Keyring.of, (_b64(self.current.raw), tuple(_b64(k.raw) for k in self.old)))

    @property
    def key_id(self) -> str:
        return self.current.id

    @property
    def old_ids(self) -> tuple[str, ...]:
        return tuple(k.id for k in self.old if k.id != self.current.id)

    def seal(self, plain: str) -> str:
        nonce = os.urandom(NONCE)
        kid = self.current.id
        sealed = self.current.aead.encrypt(nonce, plain.encode(), kid.encode())
        return f"{PREFIX}{kid}:{base64.urlsafe_b64encode(nonce + sealed).rstrip(b'=').decode()}"

    def open(self, value: str) -> str:
        m = SEALED.fullmatch(value)
        if m is None:
            return value  # stored in clear (before the key, or without one)
        kid, body = m.groups()
        key = self._by_id.get(kid)
        if key is None:
            raise DataKeyError(
                f"a value is sealed with key {kid}, which is neither DESK_DATA_KEY nor in "
                "DESK_DATA_OLD_KEYS"
            )
        raw = _b64decode(body)
        try:
            return key.aead.decrypt(raw[:NONCE], raw[NONCE:], kid.encode()).decode()
        except InvalidTag:
            raise DataKeyError(
                f"a value sealed with key {kid} fails authentication: it was altered"
            ) from None

    def address(self, plain: str, key: _Key | None = None) -> str:
        """``plain`` sealed deterministically under ``key`` (the current one by default)."""
        k = key or self.current
        data = plain.encode()
        data += b"\0" * (-len(data) % ADDRESS_PAD)
        sealed = k.siv.encrypt(data, [k.id.encode()])
        return f"{ADDRESS_PREFIX}{k.id}:{_b64(sealed)}"

    def addresses(self, plain: str) -> list[str]:
        """``plain`` as stored under each key still read, the current first: what an
        equality lookup asks for while a rotation has not rewritten every row yet."""
        return [self.address(plain, k) for k in (self.current, *self.old)]

    def open_address(self, value: str) -> str:
        m = ADDRESS.fullmatch(value)
        if m is None:
            return value
        kid, body = m.groups()
        key = self._by_id.get(kid)
        if key is None:
            raise DataKeyError(
                f"an address is sealed with key {kid}, which is neither DESK_DATA_KEY nor in "
                "DESK_DATA_OLD_KEYS"
            )
        try:
            return key.siv.decrypt(_b64decode(body), [kid.encode()]).rstrip(b"\0").decode()
        except InvalidTag:
            raise DataKeyError(
                f"an address sealed with key {kid} fails authentication: it was altered"
            ) from None


_ring: Keyring | None = None


def install(ring: Keyring | None) -> None:
    """Set the process's keyring (None: plain text, as a desk without a key)."""
    global _ring
    _ring = ring


def keyring() -> Keyring | None:
    return _ring


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and SEALED.fullmatch(value) is not None


def sealed_key_id(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    m = SEALED.fullmatch(value)
    return m.group(1) if m else None


def open_value(value: str) -> str:
    if not is_sealed(value):
        return value
    if _ring is None:
        raise DataKeyError(
            "the database holds encrypted values but no DESK_DATA_KEY is set: set the key"
        )
    return _ring.open(value)


def seal_text(value: str) -> str:
    """``value`` sealed under the current key, as EncryptedText stores it; itself without a
    key. For a column that stays clear for the queries but sometimes quotes a customer (a
    ticket event of an edit); :func:`open_value` reads it back."""
    return value if _ring is None or value == "" else _ring.seal(value)


class EncryptedText(TypeDecorator[str]):
    """Text sealed under the data key; the empty string stays empty (``text != ''`` filters
    keep working and an erased value looks erased)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or value == "" or _ring is None:
            return value
        return _ring.seal(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return open_value(value)


class EncryptedJSON(TypeDecorator[Any]):
    """A JSON document sealed whole: stored as a JSON string ``"dk1:…"`` in the same JSON
    column, so turning encryption on needs no change of column type."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if _ring is None or value is None:
            return value
        return _ring.seal(json.dumps(value, separators=(",", ":"), ensure_ascii=False))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if is_sealed(value):
            return json.loads(open_value(value))
        return value


def is_address(value: object) -> bool:
    return isinstance(value, str) and ADDRESS.fullmatch(value) is not None


def _never_sealed(value: str) -> bool:
    """An address stored as given under any key: empty, clear by its prefix, or sealed already."""
    return value == "" or value.startswith(CLEAR_PREFIXES) or is_address(value)


def seal_address(value: str) -> str:
    """How an :class:`Address` column stores ``value`` (itself without a key, when clear by
    its prefix, or when sealed already)."""
    if _ring is None or _never_sealed(value):
        return value
    return _ring.address(value)


def address_forms(value: str) -> list[str]:
    """Every stored form of ``value`` an equality lookup must match (one without a key): under
    each key still read, the current first, and in clear, as a desk stored it before it had a
    key (until ``deskbot keys rotate`` seals those rows)."""
    if _ring is None or _never_sealed(value):
        return [value]
    return [*_ring.addresses(value), value]


def open_address(value: str) -> str:
    if not is_address(value):
        return value
    if _ring is None:
        raise DataKeyError(
            "the database holds encrypted addresses but no DESK_DATA_KEY is set: set the key"
        )
    return _ring.open_address(value)


class Address(TypeDecorator[str]):
    """A platform address the desk looks customers up by, orders their work by or sends to:
    sealed deterministically (see the module's docstring), so ``==`` and ``IN`` still work.
    While old keys are read, ``col == x`` becomes ``col IN (x under each key)``; comparing
    two columns compares the stored values (both sides are written under the current key)."""

    impl = Text
    cache_ok = True

    class comparator_factory(TypeDecorator.Comparator[str]):
        def operate(self, op: Any, *other: Any, **kwargs: Any) -> Any:
            if _ring is not None and other:
                raw = type_coerce(self.expr, Text)
                if op is operators.eq and isinstance(other[0], str):
                    forms = address_forms(other[0])
                    return raw == forms[0] if len(forms) == 1 else raw.in_(forms)
                if op is operators.ne and isinstance(other[0], str):
                    return raw.not_in(address_forms(other[0]))
                if op in (operators.in_op, operators.not_in_op) and isinstance(
                    other[0], list | tuple | set | frozenset
                ):
                    values = [str(v) for v in other[0]]
                    forms = [f for v in values for f in address_forms(v)]
                    return raw.in_(forms) if op is operators.in_op else raw.not_in(forms)
            return super().operate(op, *other, **kwargs)

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else seal_address(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else open_address(value)
