"""The simulated exchange clock (ms since epoch, UTC).

``speed > 0``: sim time runs ``speed`` times faster than the wall clock from ``start_ms``, and
stops at ``end_ms`` (the close time of the last candle). ``speed == 0``: the clock is stepped
by the replay itself (it moves to each event's time as the event is sent), so it runs exactly as
fast as the clients read.
"""

from __future__ import annotations

import time


class SimClock:
    """Exchange clock. ``now_ms()`` is the market's time; ``shift_ms`` skews only server time."""

    def __init__(self, start_ms: int, end_ms: int, speed: float) -> None:
        if not speed >= 0:
            raise ValueError(f"speed: >= 0 (0 = as fast as the client reads); got {speed!r}")
        self.start_ms = int(start_ms)
        self.end_ms = int(end_ms)
        self.speed = float(speed)
        self._t0: float | None = None
        self._stepped = self.start_ms
        self.shift_ms = 0

    def start(self) -> None:
        """Start running (timed mode): sim time ``start_ms`` is now."""
        if self._t0 is None:
            self._t0 = time.perf_counter()

    @property
    def stepped(self) -> bool:
        return self.speed == 0

    def now_ms(self) -> int:
        """Simulated market time, ms."""
        if self.speed == 0 or self._t0 is None:
            return self._stepped
        t = self.start_ms + int((time.perf_counter() - self._t0) * 1000.0 * self.speed)
        return min(t, self.end_ms)

    def step_to(self, ms: int) -> None:
        """Stepped mode: move the clock forward to ``ms`` (never backwards)."""
        if ms > self._stepped:
            self._stepped = ms

    def wall_delay(self, ms: int) -> float:
        """Timed mode: wall seconds until sim time ``ms`` (<= 0 when already past)."""
        if self._t0 is None or self.speed == 0:
            return 0.0
        due = self._t0 + (ms - self.start_ms) / 1000.0 / self.speed
        return due - time.perf_counter()

    def server_ms(self) -> int:
        """Server time as REST reports it: the sim clock plus any fault skew."""
        return self.now_ms() + self.shift_ms
