"""pocklib: one MA-crossover strategy from backtest to dry run to a live Binance USD-M session."""

from pocklib.rules import DEFAULT_SPECS, Rules, SymbolSpec, order_qty, stop_levels

__all__ = ["DEFAULT_SPECS", "Rules", "SymbolSpec", "order_qty", "stop_levels"]
__version__ = "0.1.0"
