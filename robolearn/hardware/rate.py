"""A fixed-rate loop timer for control and recording loops."""

from __future__ import annotations

import time


class Rate:
    """Run a loop at `hz`: `sleep()` waits for the next tick (no waiting when realtime=False)."""

    def __init__(self, hz: float, realtime: bool = True):
        self.period, self.realtime = 1.0 / hz, realtime
        self.next = time.monotonic() + self.period
        self.overruns = 0

    def sleep(self) -> None:
        if not self.realtime:
            return
        delay = self.next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            self.overruns += 1
            self.next = time.monotonic()
        self.next += self.period
