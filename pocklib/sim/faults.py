"""Fault injection for reliability tests. Default: no faults.

A :class:`FaultPlan` is given at start (``Simulator(faults=...)``) or swapped at run time
(``sim.set_faults(plan)`` or ``POST /_sim/faults`` with the plan as JSON). Random choices use a
``random.Random(seed)`` created when the plan is installed, so a run is repeatable; the
``*_next`` counters are fully deterministic ("the next N calls / frames").
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

REST_FAULTS = ("429", "503", "timeout", "timeout_after", "reject")


@dataclass
class FaultPlan:
    """What to break. Wall seconds (``_s``), sim ms (``_ms``), fractions (``_rate``).

    Websocket:
      ws_drop_every_s: close every stream connection every N wall seconds.
      ws_drop_at_ms: close every stream connection once when the sim clock reaches each time.
      ws_delay_ms: hold each outgoing stream message this many wall ms.
      ws_duplicate_rate / ws_duplicate_next: send a message twice (share of messages / the next N).
      ws_malformed_next: replace the next N messages' text with a malformed (non-JSON) frame
        (the real message is then sent after it, so nothing is lost but a parse error is provoked).
      ws_silent: connections are accepted and commands read, but nothing is sent (a feed that
        stopped delivering while its socket stays open).
    REST:
      rest_fault: "429" (with Retry-After, code -1003) | "503" | "timeout" (held, never executed)
        | "timeout_after" (executed, then the answer is held past the client's timeout)
        | "reject" (refused, never executed, with HTTP 400 and ``reject_code`` / ``reject_msg``:
        an order the exchange turns down, e.g. -2019 when another client used the margin).
      rest_fault_rate: share of matching calls that fail (seeded); rest_fault_next: the next N
        matching calls fail (counts down; used first).
      rest_fault_paths: "METHOD /path" or "/path" entries; empty = every REST path except /_sim.
      rest_hold_s: how long a "timeout" answer is held (wall seconds).
      retry_after_s: the Retry-After header value on 429s.
      reject_code, reject_msg: the Binance error of a "reject" fault.
    Clock:
      clock_shift_ms: server time = sim time + shift, provoking -1021 for clients that do not
        resynchronise.
    Algo (conditional) orders, all durations sim ms (docs/wire/algo-orders.md):
      algo_latency_ms: time from the trigger (TRIGGERING) to the MARKET order reaching the
        matching engine (TRIGGERED), overriding the simulator's setting (None: keep it).
      algo_invisible_ms / algo_invisible_rate: consistency lag: an accepted algo order is not
        seen by ``GET``/``DELETE /fapi/v1/algoOrder`` (-2013 / -2011), ``openAlgoOrders`` and
        ``allAlgoOrders`` for this long after acceptance; the share of accepted orders it hits
        (seeded). It still triggers, and a new order with its clientAlgoId is still refused.
      algo_reject_next: the next N triggers are REJECTED by the matching engine (a failed
        margin check, ``rm`` "Margin is insufficient.").
      algo_expire_next / algo_expire_after_ms: the next N accepted algo orders are EXPIRED by the
        system this long after acceptance (if still NEW).
      algo_stuck_next: the next N triggers stay TRIGGERING for good (no order ever reaches the
        matching engine, and a cancel answers -2011), as seen on Binance's demo venue.
      algo_fill_delay_next / algo_fill_delay_ms: for the next N triggers the MARKET order waits
        this long in the matching engine (algo TRIGGERED, order NEW) before it fills at the
        price of that moment.
    """

    seed: int = 0
    ws_drop_every_s: float | None = None
    ws_drop_at_ms: list[int] = field(default_factory=list)
    ws_delay_ms: float = 0.0
    ws_duplicate_rate: float = 0.0
    ws_duplicate_next: int = 0
    ws_malformed_next: int = 0
    ws_silent: bool = False
    rest_fault: str | None = None
    rest_fault_rate: float = 0.0
    rest_fault_next: int = 0
    rest_fault_paths: list[str] = field(default_factory=list)
    rest_hold_s: float = 30.0
    retry_after_s: int = 1
    reject_code: int = -2019
    reject_msg: str = "Margin is insufficient."
    clock_shift_ms: int = 0
    algo_latency_ms: int | None = None
    algo_invisible_ms: int = 0
    algo_invisible_rate: float = 1.0
    algo_reject_next: int = 0
    algo_expire_next: int = 0
    algo_expire_after_ms: int = 0
    algo_stuck_next: int = 0
    algo_fill_delay_next: int = 0
    algo_fill_delay_ms: int = 0

    def __post_init__(self) -> None:
        if self.rest_fault is not None and self.rest_fault not in REST_FAULTS:
            raise ValueError(f"rest_fault: one of {REST_FAULTS} or None; got {self.rest_fault!r}")
        for name in ("ws_duplicate_rate", "rest_fault_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}: fraction in [0, 1]; got {v!r}")
        for name in ("ws_duplicate_next", "ws_malformed_next", "rest_fault_next"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: >= 0; got {getattr(self, name)!r}")
        if self.ws_drop_every_s is not None and not self.ws_drop_every_s > 0:
            raise ValueError(f"ws_drop_every_s: > 0 or None; got {self.ws_drop_every_s!r}")
        self.ws_drop_at_ms = sorted(int(x) for x in self.ws_drop_at_ms)
        self.rest_fault_paths = list(self.rest_fault_paths)
        self._check_algo()

    def _check_algo(self) -> None:
        """The algo-order fields: whole sim ms / counts >= 0, a fraction in [0, 1]."""
        if not 0.0 <= self.algo_invisible_rate <= 1.0:
            raise ValueError(f"algo_invisible_rate: fraction in [0, 1]; got {self.algo_invisible_rate!r}")
        names = ["algo_invisible_ms", "algo_reject_next", "algo_expire_next", "algo_expire_after_ms",
                 "algo_stuck_next", "algo_fill_delay_next", "algo_fill_delay_ms"]
        if self.algo_latency_ms is not None:
            names.append("algo_latency_ms")
        for name in names:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: a whole number >= 0 (sim ms or a count); got {v!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FaultPlan:
        """Build from JSON; unknown keys are an error (a typo must not silently do nothing)."""
        names = {f.name for f in fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise ValueError(f"FaultPlan: unknown keys {bad}; known: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultState:
    """A plan being applied: seeded RNG and countdowns, mutated as faults fire.

    One object for the simulator's life, shared by the REST and websocket sides; installing a
    new plan resets it in place (fresh RNG, countdowns and log).
    """

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self.install(plan)

    def install(self, plan: FaultPlan | None) -> None:
        """Apply ``plan`` (None = no faults) from scratch."""
        self.plan = plan or FaultPlan()
        self.rng = random.Random(self.plan.seed)
        self.rest_next = self.plan.rest_fault_next
        self.dup_next = self.plan.ws_duplicate_next
        self.malformed_next = self.plan.ws_malformed_next
        self.drop_at = list(self.plan.ws_drop_at_ms)
        self.algo_next = {"reject": self.plan.algo_reject_next, "expire": self.plan.algo_expire_next,
                          "stuck": self.plan.algo_stuck_next, "fill_delay": self.plan.algo_fill_delay_next}
        self.fired: list[tuple[str, str]] = []   # (kind, detail) log for tests

    @property
    def ws_active(self) -> bool:
        p = self.plan
        return bool(p.ws_delay_ms or p.ws_duplicate_rate or self.dup_next or self.malformed_next)

    def rest_fault_for(self, method: str, path: str) -> str | None:
        """The fault to apply to this REST call, or None."""
        p = self.plan
        if p.rest_fault is None or path.startswith("/_sim"):
            return None
        if p.rest_fault_paths and not any(
                e == path or e == f"{method} {path}" for e in p.rest_fault_paths):
            return None
        if self.rest_next > 0:
            self.rest_next -= 1
        elif not (p.rest_fault_rate and self.rng.random() < p.rest_fault_rate):
            return None
        self.fired.append(("rest", f"{p.rest_fault} {method} {path}"))
        return p.rest_fault

    def duplicate(self) -> bool:
        if self.dup_next > 0:
            self.dup_next -= 1
            return True
        return bool(self.plan.ws_duplicate_rate) and self.rng.random() < self.plan.ws_duplicate_rate

    def malformed(self) -> bool:
        if self.malformed_next > 0:
            self.malformed_next -= 1
            self.fired.append(("ws", "malformed"))
            return True
        return False

    def drops_due(self, now_ms: int) -> bool:
        """True once per ``ws_drop_at_ms`` time reached."""
        fired = False
        while self.drop_at and self.drop_at[0] <= now_ms:
            self.drop_at.pop(0)
            fired = True
        if fired:
            self.fired.append(("ws", f"drop at {now_ms}"))
        return fired

    # -- algo orders (asked by the engine; see FaultPlan "Algo") --------------------------
    def algo_latency_ms(self, default: int) -> int:
        """Trigger latency (sim ms): the plan's when it sets one, else ``default``."""
        v = self.plan.algo_latency_ms
        return default if v is None else v

    def algo_lag_ms(self, algo_id: int) -> int:
        """How long (sim ms) the algo order just accepted stays invisible (0: not at all)."""
        p = self.plan
        if not p.algo_invisible_ms or not (p.algo_invisible_rate >= 1.0 or
                                           self.rng.random() < p.algo_invisible_rate):
            return 0
        self.fired.append(("algo", f"invisible {p.algo_invisible_ms} ms algoId={algo_id}"))
        return p.algo_invisible_ms

    def algo_take(self, kind: str, algo_id: int) -> bool:
        """True (and counts down) when the next-N fault ``kind`` ("reject", "expire", "stuck",
        "fill_delay") applies to algo order ``algo_id``."""
        if self.algo_next.get(kind, 0) <= 0:
            return False
        self.algo_next[kind] -= 1
        self.fired.append(("algo", f"{kind} algoId={algo_id}"))
        return True
