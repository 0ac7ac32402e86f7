"""bot/base/repeat.py's Streak: a failing loop waits longer each time, up to a bound, and says
so in the log once per streak (then once a quiet period), not at every try. Its nap: an idle
loop woken on the event loop's next turn by new work, or by the desk stopping."""

from __future__ import annotations

import asyncio
import time

from bot.base.repeat import Streak, nap, pause


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


async def test_a_nap_ends_on_the_next_turn_of_the_loop_after_its_wakeup() -> None:
    wakeup, stop = asyncio.Event(), asyncio.Event()
    napping = asyncio.create_task(nap(wakeup, stop, 60.0))
    await asyncio.sleep(0)  # it is waiting now
    assert not napping.done()
    wakeup.set()
    await asyncio.sleep(0)  # one turn: the napper ran (through asyncio.wait it took three)
    assert napping.done()
    assert not stop.is_set()


async def test_a_nap_ends_when_the_desk_stops_or_its_time_is_up() -> None:
    wakeup, stop = asyncio.Event(), asyncio.Event()
    napping = asyncio.create_task(nap(wakeup, stop, 60.0))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(napping, 1.0)
    began = time.monotonic()
    await nap(asyncio.Event(), asyncio.Event(), 0.05)
    assert 0.04 <= time.monotonic() - began < 1.0
    began = time.monotonic()
    await nap(asyncio.Event(), stop, 60.0)  # stopped already: no nap at all
    assert time.monotonic() - began < 0.01
