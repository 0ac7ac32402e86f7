"""The route table: which handler takes an event, in the order they were registered.

The dispatcher applies each inbox event to the first route whose kind and guard match (after
aiogram's routers: registration order is the order of precedence). A handler may return
:data:`NEXT` to let the event fall through to the next matching route (aiogram's
``SkipHandler``), as the knowledge base does when it did not answer a message. The table is
built by the composition root, ``bot/wiring.py``; the loop itself knows no feature.

Handlers are called with the step's :class:`bot.core.tickets.Desk` and the
:class:`Prepared` event. Write them as lambdas that look methods up when called
(``lambda d, p: d.customer_message(...)``), never as a method bound when the table is built:
tests replace methods on the class.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.core.tickets import Desk
from bot.domain.prepared import Prepared


class Next(enum.Enum):
    NEXT = "next"


NEXT = Next.NEXT  # a handler's "not mine after all": try the next route

E = TypeVar("E")
Guard = Callable[[Any, Prepared], bool]
Handler = Callable[[Desk, Prepared], Awaitable[object]]
# Work on an event outside its transaction (a status lookup, the knowledge base's match), run
# in order before the event is applied; ``after_model`` ones see the classification.
Preparer = Callable[[Prepared], Awaitable[None]]


@dataclass(frozen=True)
class Preparers:
    before_model: Sequence[Preparer] = ()
    after_model: Sequence[Preparer] = ()


@dataclass(frozen=True)
class Route:
    kind: type[Any]
    handler: Handler
    when: Guard | None = None
    name: str = ""


class Routes:
    """An ordered list of ``(event kind, guard) → handler``."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self,
        kind: type[E],
        handler: Callable[[Desk, Prepared], Awaitable[object]],
        *,
        when: Callable[[E, Prepared], bool] | None = None,
        name: str = "",
    ) -> None:
        self.routes.append(Route(kind, handler, when, name))

    async def apply(self, desk: Desk, prep: Prepared) -> bool:
        """Run the first route that takes the event; False when none did."""
        event = prep.event
        for route in self.routes:
            if not isinstance(event, route.kind):
                continue
            if route.when is not None and not route.when(event, prep):
                continue
            if await route.handler(desk, prep) is not NEXT:
                return True
        return False
