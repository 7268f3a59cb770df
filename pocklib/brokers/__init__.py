"""Brokers behind one small interface: ``PaperBroker`` (simulated fills) and ``BinanceBroker``
(USD-M futures through python-binance). The session does not know which one it drives."""

from __future__ import annotations

from typing import Any

from pocklib.brokers.base import REASONS, Broker
from pocklib.model import Fill

__all__ = ["REASONS", "BinanceBroker", "Broker", "Fill", "PaperBroker"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the paper broker must not import python-binance, and the other way round.
    if name == "BinanceBroker":
        from pocklib.brokers.binance import BinanceBroker

        return BinanceBroker
    if name == "PaperBroker":
        from pocklib.brokers.paper import PaperBroker

        return PaperBroker
    raise AttributeError(f"module 'pocklib.brokers' has no attribute {name!r}")
