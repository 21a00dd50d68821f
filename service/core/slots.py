"""The batcher's worker threads as slots: a round takes one to run on (a wide round, every one) and
gives them back when its last batch ends; which rounds run wide.

One is kept for interactive callers: for KEEP_FOR_HIGH_S after a HIGH request arrived, a round of
less urgent texts starts only while another slot stays free, and none runs wide. A HIGH text then
waits for no bulk round to end (a round cannot be stopped once started): it starts at once, on the
slot kept for it, while the bulk work runs on the others.
"""

from __future__ import annotations

import asyncio
import math
import time

from service.core.fair_queue import Priority

# how long after the last HIGH request a slot stays kept for the next: interactive callers send
# again within seconds, and a bulk round started on the kept slot meanwhile would make the next one
# wait for all of it
KEEP_FOR_HIGH_S = 5.0

# A round that starts alone (nothing running or waiting) runs wide, on every core, only while such
# rounds are rarely joined: another text arriving before one ends, which a wide round makes wait for
# the whole of it, where a narrow one leaves it the other core. `joined` is the running share of lone
# rounds that were joined, each round weighing JOINED_WEIGHT; wide while it is below WIDE_BELOW. A
# lone caller, who sends again only once answered, is never joined and turns wide after
# QUIET_ROUNDS rounds; Poisson arrivals of more than about one per four rounds' time keep rounds
# narrow (docs/batching.md has the measurements).
JOINED_WEIGHT = 0.3
WIDE_BELOW = 0.25
QUIET_ROUNDS = math.ceil(math.log(WIDE_BELOW) / math.log(1 - JOINED_WEIGHT))


class Slots:
    def __init__(self, count: int) -> None:
        self.count = count
        self.free = count  # neither running a round nor being given one
        self._semaphore = asyncio.Semaphore(count)
        self._high_seen = -math.inf  # when the last HIGH request arrived (time.monotonic())
        self._joined = 1.0  # share of recent lone rounds another text arrived during (see above)

    async def take(self) -> None:
        await self._semaphore.acquire()
        self.free -= 1

    async def take_all(self) -> int:
        """Every other slot too, for a round that runs wide (the caller holds one); how many it holds."""
        for _ in range(self.count - 1):
            await self.take()
        return self.count

    def give(self, count: int = 1) -> None:
        for _ in range(count):
            self._semaphore.release()
        self.free += count

    def saw_high(self) -> None:
        """A HIGH request arrived: a slot is kept for the next KEEP_FOR_HIGH_S."""
        self._high_seen = time.monotonic()

    def kept_for(self, now: float) -> float:
        """For how long still a slot is kept for HIGH texts (0: none is)."""
        if self.count < 2:  # with one slot, keeping it would starve everything else
            return 0.0
        return max(0.0, self._high_seen + KEEP_FOR_HIGH_S - now)

    def runs_wide(self, alone: bool, priority: Priority) -> bool:
        """Whether a round runs wide: one that starts alone while lone rounds are rarely joined, and
        not a less urgent one while a slot is kept (it would hold the kept slot too)."""
        if not alone or self._joined >= WIDE_BELOW:
            return False
        return priority is Priority.HIGH or not self.kept_for(time.monotonic())

    def lone_round_ended(self, joined: bool) -> None:
        """A round that started alone ended; joined: another text arrived while it ran."""
        self._joined += JOINED_WEIGHT * (float(joined) - self._joined)
