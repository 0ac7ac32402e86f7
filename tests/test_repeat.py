"""bot/base/repeat.py's Streak: a failing loop waits longer each time, up to a bound, and says
so in the log once per streak (then once a quiet period), not at every try."""

from __future__ import annotations

import asyncio
import time

from bot.base.repeat import Streak, pause


def test_a_streak_doubles_its_pause_to_a_bound_and_logs_its_first_failure() -> None:
    streak = Streak(first=0.1, longest=2.0, quiet=60.0)
    tries = [streak.failed() for _ in range(8)]
    assert [round(w, 2) for w, _ in tries] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert [loud for _, loud in tries] == [True] + [False] * 7
    assert streak.ended() == 8 and streak.ended() == 0
    assert streak.failed() == (0.1, True)  # a new streak, after the loop worked: said again


def test_a_long_streak_says_so_again_after_its_quiet_period() -> None:
    streak = Streak(quiet=0.05)
    assert streak.failed()[1] is True
    assert streak.failed()[1] is False
    time.sleep(0.06)
    assert streak.failed()[1] is True


async def test_pause_ends_early_when_the_desk_stops() -> None:
    stop = asyncio.Event()
    began = time.monotonic()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    await pause(stop, 5.0)
    assert time.monotonic() - began < 1.0
    began = time.monotonic()
    await pause(asyncio.Event(), 0.05)
    assert time.monotonic() - began >= 0.04
