"""The process's heap after start: what the cyclic garbage collector need not walk again."""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect once, then move every object that survived the start (modules, classes, rules,
    the platforms' clients, the model) into the collector's permanent generation.

    The desk allocates many short-lived objects a message, so the collector runs often, and
    each full collection walked every object the process holds: about 350,000 with rules only,
    a quarter of a second a pass, measured in ``bench.loop`` (one full and 21 middle
    collections in a 300-message burst, 0.38 s of collection in all). Frozen objects are still
    freed when their last reference goes; only a cycle among them would be kept, which for what
    a started desk holds is what it keeps anyway. Called once a desk has started
    (``bot.app.serve``; ``bench.loop`` does as ``serve`` does)."""
    gc.collect()
    gc.freeze()
