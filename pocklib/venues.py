"""Where pocklib connects: every Binance host lives in this module and nowhere else.

Venues
------
========  ============================================  ==============================  ==================================
name      REST base (python-binance futures URL)        stream base                     keys (environment variables)
========  ============================================  ==============================  ==================================
testnet   https://testnet.binancefuture.com/fapi        wss://fstream.binancefuture.com BINANCE_TESTNET_API_KEY / _SECRET
demo      https://demo-fapi.binance.com/fapi            wss://fstream.binancefuture.com BINANCE_DEMO_API_KEY / _SECRET
live      https://fapi.binance.com/fapi                 wss://fstream.binance.com       BINANCE_API_KEY / _SECRET
sim       given by the running simulator                given by the simulator          the simulator's keys
========  ============================================  ==============================  ==================================

Kline streams use the combined form ``<ws>/market/stream?streams=a/b`` (Binance's layout since
2026-04-23); ``stream_path="/stream"`` selects the legacy form for older endpoints.

Real money: ``venue("live")`` is refused unless the caller passes
``i_understand_real_money=True`` **and** the environment has ``POCKLIB_ALLOW_LIVE=1``.
Keys come from the environment only; they are checked before any connection and never appear
in ``repr``/``str`` of a :class:`Venue` or :class:`Keys`. Keys are kept out of outputs by
construction (never formatted, logged or journaled); log/message redaction
(:func:`pocklib.errors.redact`) is a second line of defence that covers only values of at
least :data:`pocklib.errors.MIN_SECRET_LEN` characters (real Binance keys are 64), because
masking a short value — the simulator's ``"test-key"``, a one-letter test key — would corrupt
symbols and client ids. A short key is accepted as it is, and nothing is logged about it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pocklib.errors import install_log_redaction, register_secret

#: name -> (REST base, stream base, key env var, secret env var). The one table of hosts.
HOSTS: dict[str, tuple[str, str, str, str]] = {
    "testnet": ("https://testnet.binancefuture.com/fapi", "wss://fstream.binancefuture.com",
                "BINANCE_TESTNET_API_KEY", "BINANCE_TESTNET_API_SECRET"),
    "demo": ("https://demo-fapi.binance.com/fapi", "wss://fstream.binancefuture.com",
             "BINANCE_DEMO_API_KEY", "BINANCE_DEMO_API_SECRET"),
    "live": ("https://fapi.binance.com/fapi", "wss://fstream.binance.com",
             "BINANCE_API_KEY", "BINANCE_API_SECRET"),
}

#: Combined-stream path, current form (klines live under ``/market`` since 2026-04-23).
STREAM_PATH = "/market/stream"
#: The pre-2026 combined-stream path still used by many clients (and served by the simulator).
LEGACY_STREAM_PATH = "/stream"

#: ``pocklib.sim.Simulator``'s default (api_key, api_secret): test keys, not secrets.
SIM_DEFAULT_KEYS = ("test-key", "test-secret")

VENUE_NAMES = ("testnet", "demo", "live", "sim")
ALLOW_LIVE_ENV = "POCKLIB_ALLOW_LIVE"
DEFAULT_VENUE = "testnet"


class VenueError(ValueError):
    """A venue cannot be used as asked (unknown name, missing keys, live without opt-in)."""


class Keys:
    """An API key pair. ``repr``/``str`` never show either part."""

    __slots__ = ("_key", "_secret", "source")

    def __init__(self, api_key: str, api_secret: str, source: str = "") -> None:
        self._key = api_key
        self._secret = api_secret
        self.source = source  # where they came from, e.g. "env BINANCE_TESTNET_API_KEY/_SECRET"
        # Registered for log redaction when long enough (>= errors.MIN_SECRET_LEN); a shorter
        # value is silently not registered: nothing about it is logged or raised.
        register_secret(api_key)
        register_secret(api_secret)

    @property
    def api_key(self) -> str:
        return self._key

    @property
    def api_secret(self) -> str:
        return self._secret

    def __repr__(self) -> str:
        return f"Keys(<hidden>, source={self.source!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # keep secrets out of pickles (journals, notebook state)
        raise TypeError("Keys are not picklable: read them from the environment again")

    def __copy__(self) -> Keys:  # immutable: copies (dataclasses.asdict, deepcopy) share it
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Keys:
        return self


@dataclass(frozen=True)
class Venue:
    """A place to trade: REST base URL (ending in ``/fapi``), stream base URL, keys.

    ``time_rate``: exchange ms per wall ms (1 for real venues, the replay speed for the sim);
    used by :class:`pocklib.clock.ExchangeClock`. ``recv_window``: ms, sent on signed calls.
    """

    name: str
    rest_url: str
    ws_url: str
    keys: Keys = field(repr=False)
    time_rate: float = 1.0
    stream_path: str = STREAM_PATH
    recv_window: int = 10_000
    timeout_s: float = 10.0

    def stream_url(self, symbols: list[str] | tuple[str, ...], interval: str) -> str:
        """Combined kline stream URL for ``symbols`` (one connection for all)."""
        return stream_url(self.ws_url, symbols, interval, self.stream_path)

    def make_client(self, timeout_s: float | None = None) -> Any:
        """A python-binance ``Client`` (``ping=False``: no network at construction) whose every
        futures URL attribute points at :attr:`rest_url`."""
        from binance.client import Client  # heavy import; only when a client is wanted

        install_log_redaction()
        t = self.timeout_s if timeout_s is None else timeout_s
        client = Client(self.keys.api_key, self.keys.api_secret, requests_params={"timeout": t},
                        testnet=self.name == "testnet", demo=self.name == "demo", ping=False)
        # python-binance picks FUTURES_URL / _TESTNET_URL / _DEMO_URL by flag; set all three so
        # no call can reach another host whatever flag path it takes.
        for attr in ("FUTURES_URL", "FUTURES_TESTNET_URL", "FUTURES_DEMO_URL"):
            setattr(client, attr, self.rest_url)
        base = self.rest_url[: -len("/fapi")] if self.rest_url.endswith("/fapi") else self.rest_url
        if self.name == "sim":
            for attr in ("FUTURES_DATA_URL", "FUTURES_DATA_TESTNET_URL"):
                setattr(client, attr, base + "/futures/data")
            for attr in ("API_URL", "API_TESTNET_URL", "API_DEMO_URL"):
                setattr(client, attr, base + "/api")
        client.REQUEST_RECVWINDOW = self.recv_window
        return client


def stream_url(ws_base: str, symbols: list[str] | tuple[str, ...], interval: str,
               path: str = STREAM_PATH) -> str:
    """``<ws_base><path>?streams=btcusdt@kline_5m/ethusdt@kline_5m`` (symbols lower-cased)."""
    if not symbols:
        raise ValueError("symbols: at least one symbol is needed; got []")
    names = "/".join(f"{s.lower()}@kline_{interval}" for s in symbols)
    return f"{ws_base.rstrip('/')}/{path.strip('/')}?streams={names}"


def _keys_from_env(name: str, env: Mapping[str, str]) -> Keys:
    _, _, kvar, svar = HOSTS[name]
    missing = [v for v in (kvar, svar) if not env.get(v, "").strip()]
    if missing:
        raise VenueError(
            f"venue {name!r}: missing API keys: set the environment variable(s) {', '.join(missing)} "
            f"(keys are read from the environment only, never from parameters or notebooks)")
    return Keys(env[kvar].strip(), env[svar].strip(), source=f"env {kvar}/{svar}")


def venue(name: str = DEFAULT_VENUE, *, i_understand_real_money: bool = False,
          env: Mapping[str, str] | None = None, rest_url: str | None = None, ws_url: str | None = None,
          stream_path: str = STREAM_PATH, timeout_s: float = 10.0) -> Venue:
    """The venue ``name`` ("testnet" default, "demo", "live") with keys from the environment.

    ``live`` needs ``i_understand_real_money=True`` and ``POCKLIB_ALLOW_LIVE=1`` in the
    environment. ``rest_url``/``ws_url`` override the hosts (e.g. a regional endpoint). For the
    simulator use :func:`sim_venue`. Raises :class:`VenueError` before any connection.
    """
    env = os.environ if env is None else env
    if name == "sim":
        raise VenueError("venue 'sim': build it from the running simulator with pocklib.venues.sim_venue(sim)")
    if name not in HOSTS:
        raise VenueError(f"venue: one of {list(VENUE_NAMES)}; got {name!r}")
    if name == "live":
        missing = []
        if i_understand_real_money is not True:
            missing.append("the parameter i_understand_real_money=True")
        if env.get(ALLOW_LIVE_ENV, "").strip() != "1":
            missing.append(f"the environment variable {ALLOW_LIVE_ENV}=1")
        if missing:
            raise VenueError("venue 'live' trades REAL MONEY and is refused: missing " + " and ".join(missing)
                             + ". Use venue 'testnet' or 'demo' to practise.")
    rest, ws, _, _ = HOSTS[name]
    keys = _keys_from_env(name, env)
    return Venue(name, (rest_url or rest).rstrip("/"), (ws_url or ws).rstrip("/"), keys,
                 stream_path=stream_path, timeout_s=timeout_s)


def sim_venue(sim: Any = None, *, rest_url: str | None = None, ws_url: str | None = None,
              api_key: str | None = None, api_secret: str | None = None, speed: float | None = None,
              stream_path: str = STREAM_PATH, timeout_s: float = 5.0, recv_window: int = 60_000) -> Venue:
    """Venue of a running :class:`pocklib.sim.Simulator` (or explicit URLs and keys).

    ``sim``: a started Simulator (``base_url``, ``ws_url``, ``speed``, ``api_key``,
    ``api_secret``); explicit arguments win. ``rest_url`` may be the server root or end in ``/fapi``. ``speed``: exchange ms per wall ms
    (the sim's replay speed; None = 1; 0 = not tied to the wall clock). ``recv_window`` defaults to 60 s of exchange time
    because at 300x speed 10 s of exchange time is only 33 ms of wall time.
    """
    if sim is not None:
        rest_url = rest_url or getattr(sim, "base_url", None) or getattr(sim, "url", None)
        ws_url = ws_url or getattr(sim, "ws_url", None)
        # Older Simulators did not expose their keys: fall back to its documented defaults.
        api_key = api_key or getattr(sim, "api_key", None) or SIM_DEFAULT_KEYS[0]
        api_secret = api_secret or getattr(sim, "api_secret", None) or SIM_DEFAULT_KEYS[1]
        speed = speed if speed is not None else getattr(sim, "speed", None)
    if not rest_url or not ws_url:
        raise VenueError("venue 'sim': the simulator is not started (no url/ws_url); call sim.start() first")
    if not api_key or not api_secret:
        raise VenueError("venue 'sim': the simulator's api_key/api_secret are needed")
    rest_url = rest_url.rstrip("/")
    if not rest_url.endswith("/fapi"):
        rest_url += "/fapi"
    # speed 0 = "as fast as the client reads": exchange time does not follow the wall clock at
    # all, so the clock must resync before each signed call (ExchangeClock rate 0 means that).
    rate = 1.0 if speed is None else float(speed)
    if rate < 0:
        raise VenueError(f"venue 'sim': speed must be >= 0; got {speed!r}")
    return Venue("sim", rest_url, ws_url.rstrip("/"), Keys(api_key, api_secret, source="simulator"),
                 time_rate=rate, stream_path=stream_path, recv_window=recv_window, timeout_s=timeout_s)


__all__ = ["ALLOW_LIVE_ENV", "DEFAULT_VENUE", "HOSTS", "Keys", "LEGACY_STREAM_PATH", "STREAM_PATH",
           "VENUE_NAMES", "Venue", "VenueError", "sim_venue", "stream_url", "venue"]
