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

aiogram's ~170 Bot API methods (``SendMessage`` …) are pydantic models too, built at class
creation because ``TelegramMethod`` does not set ``defer_build``; their fields name the types,
so building them built much of what the deferral above saves, again. While aiogram is imported,
``TelegramMethod``'s config gets ``defer_build`` right after ``aiogram.methods.base`` runs and
before the methods subclass it, so a method is built when the desk first calls it (the handful
it uses). Measured: the import's CPU 1.2 → 0.7 s, memory 116 → 90 MB.

Import aiogram through this module first (``adapters.telegram`` does); if aiogram was imported
before, this does nothing and aiogram works as it always does.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import inspect
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
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
    methods = _DeferMethods()
    sys.meta_path.insert(0, methods)
    try:
        import aiogram  # noqa: F401
    finally:
        BaseModel.model_rebuild = rebuild  # type: ignore[method-assign]
        if methods in sys.meta_path:
            sys.meta_path.remove(methods)


class _DeferMethods(importlib.abc.MetaPathFinder):
    """Finds ``aiogram.methods.base`` as usual and, once it has run, sets ``defer_build`` in
    ``TelegramMethod``'s config, which every method class then inherits. Used once, during the
    import of aiogram; it takes itself off the import path when it has found that module."""

    MODULE = "aiogram.methods.base"

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec  # found some other way: imported as aiogram would
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            base = getattr(module, "TelegramMethod", None)
            if base is not None and isinstance(getattr(base, "model_config", None), dict):
                base.model_config["defer_build"] = True

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_import_aiogram_deferred()
