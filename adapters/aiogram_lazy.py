"""Import aiogram with its Telegram types built when first used, not all at import.

aiogram declares every Telegram type with pydantic's ``defer_build``, then its
``aiogram/types/__init__.py`` calls ``model_rebuild`` on all ~400 of them at import to resolve
their forward references (names each type module imports only under ``TYPE_CHECKING``). That
builds every type's full validator, each with its nested types inline: measured here, importing
``aiogram`` took 2.9 s of CPU and 150 MB of memory, the biggest single part of a desk process
(``deskbot run`` was about 377 MB) and of every desk start. No aiogram or pydantic setting turns
that loop off, so this is done by hand: while aiogram is imported, a ``model_rebuild`` called
with that namespace puts the names into the type's module instead (where the ``TYPE_CHECKING``
imports would have put them), so pydantic resolves the forward references itself when a type
is first validated, as ``defer_build`` intends. Measured: the import 2.4 s → well under half,
memory 170 → 89 MB right after it and 97 MB after an update, a message, a keyboard and two
responses were validated. Every other ``model_rebuild`` call goes through unchanged, and
nothing is patched once the import is done.

Import aiogram through this module first (``adapters.telegram`` does); if aiogram was imported
before, this does nothing and aiogram works as it always does.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel


def _import_aiogram_deferred() -> None:
    if "aiogram" in sys.modules:
        return
    rebuild = BaseModel.__dict__["model_rebuild"]
    original = rebuild.__func__
    if "_types_namespace" not in inspect.signature(original).parameters:
        import aiogram  # a pydantic without the argument: the usual import

        return

    def deferred(
        cls: type[BaseModel],
        *,
        force: bool = False,
        raise_errors: bool = True,
        _parent_namespace_depth: int = 2,
        _types_namespace: Mapping[str, Any] | None = None,
    ) -> bool | None:
        if (
            _types_namespace is not None
            and not force
            and cls.__module__.startswith("aiogram.types.")
            and not cls.__pydantic_complete__
        ):
            module = vars(sys.modules[cls.__module__])
            for name, value in _types_namespace.items():
                module.setdefault(name, value)
            return None
        result: bool | None = original(
            cls,
            force=force,
            raise_errors=raise_errors,
            _parent_namespace_depth=_parent_namespace_depth + 1,
            _types_namespace=_types_namespace,
        )
        return result

    BaseModel.model_rebuild = classmethod(deferred)  # type: ignore[assignment,method-assign]
    try:
        import aiogram  # noqa: F401
    finally:
        BaseModel.model_rebuild = rebuild  # type: ignore[method-assign]


_import_aiogram_deferred()
