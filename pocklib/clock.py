"""The exchange's clock, as seen from here.

``ExchangeClock.now_ms()`` extrapolates the exchange's server time (ms since epoch) from the last
:meth:`~ExchangeClock.sync`: ``anchor_server_ms + wall_elapsed_ms * rate``. ``rate`` is 1 for
real venues and the replay speed for the simulator (300 means 5 exchange minutes per wall
second). ``rate = 0`` means exchange time does not follow the wall clock (a simulator replaying
as fast as the client reads): ``now_ms()`` returns the last synced value and callers resync.

The wall clock is injected (``wall_s``, seconds, monotonic) so tests can freeze it.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ExchangeClock:
    """Exchange time extrapolated from the last sync. Units: ms since epoch (exchange clock)."""

    def __init__(self, rate: float = 1.0, wall_s: Callable[[], float] = time.monotonic) -> None:
        if not (rate >= 0):
            raise ValueError(f"rate: exchange ms per wall ms, >= 0; got {rate!r}")
        self.rate = float(rate)
        self._wall_s = wall_s
        self._anchor_ms: int | None = None
        self._anchor_wall_s = 0.0
        self.syncs = 0
        self.last_rtt_ms = 0.0  # wall ms of the last sync round trip

    @property
    def synced(self) -> bool:
        return self._anchor_ms is not None

    def sync(self, server_time_fn: Callable[[], int]) -> int:
        """Ask the exchange for its time (``server_time_fn() -> ms``) and anchor to it. Returns it.

        The anchor's wall time is taken *after* the answer arrives, so the estimate lags the
        exchange by at most one round trip: Binance rejects timestamps >1 s ahead of its clock
        but accepts ones up to recvWindow behind, so erring late is the safe side.
        """
        t0 = self._wall_s()
        server_ms = int(server_time_fn())
        t1 = self._wall_s()
        self.last_rtt_ms = (t1 - t0) * 1000.0
        self.set(server_ms, wall_s=t1)
        self.syncs += 1
        return server_ms

    def set(self, server_ms: int, wall_s: float | None = None) -> None:
        """Anchor to a known exchange time (e.g. a stream event time ``E``)."""
        self._anchor_ms = int(server_ms)
        self._anchor_wall_s = self._wall_s() if wall_s is None else wall_s

    def now_ms(self) -> int:
        """Exchange time now (ms). Raises ``RuntimeError`` before the first sync."""
        if self._anchor_ms is None:
            raise RuntimeError("ExchangeClock: not synced yet; call sync(server_time_fn) first")
        return self._anchor_ms + int((self._wall_s() - self._anchor_wall_s) * 1000.0 * self.rate)

    def offset_for(self, local_ms: float) -> int:
        """ms to add to ``local_ms`` (a local epoch clock reading) to get exchange time.

        python-binance signs with ``time.time()*1000 + timestamp_offset``; the broker sets
        ``client.timestamp_offset = clock.offset_for(time.time()*1000)`` before each signed call.
        """
        return int(self.now_ms() - local_ms)

    def __repr__(self) -> str:
        anchor = "unsynced" if self._anchor_ms is None else f"anchor={self._anchor_ms}"
        return f"ExchangeClock(rate={self.rate}, {anchor}, syncs={self.syncs})"


__all__ = ["ExchangeClock"]
