"""Shared fixtures: a migrated database on SQLite and, when configured, on PostgreSQL.

PostgreSQL tests read the server's URL from ``DESK_TEST_POSTGRES_URL``. Without it they are
skipped on a developer's machine, but under ``CI=true`` a missing or unreachable server fails
the run: CI must prove both databases, not quietly test one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# aiogram as the desk imports it (its types and methods built when first used), whichever test
# file a worker happens to load first: the tests then run the Telegram client the desk runs.
import adapters.aiogram_lazy  # noqa: F401  # isort: skip
from storage.db import create_engine, migrate

PG_URL = os.environ.get("DESK_TEST_POSTGRES_URL", "")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _backends() -> list[object]:
    pg = pytest.param("postgresql", marks=pytest.mark.postgres)
    return ["sqlite", pg]


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if name == "postgresql" and not PG_URL:
        if IN_CI:
            pytest.fail("CI=true but DESK_TEST_POSTGRES_URL is not set: PostgreSQL tests must run")
        pytest.skip("DESK_TEST_POSTGRES_URL not set")
    return name


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty database: a new SQLite file, or a new PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OSError as exc:
        pytest.fail(f"PostgreSQL at DESK_TEST_POSTGRES_URL is not reachable: {exc}")
    sep = "&" if "?" in PG_URL else "?"
    # A schema per test keeps each test's tables apart (storage.db turns it into search_path).
    yield f"{PG_URL}{sep}search_path={schema}"
    async with admin.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await admin.dispose()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url)
    await migrate(eng)
    yield eng
    await eng.dispose()
