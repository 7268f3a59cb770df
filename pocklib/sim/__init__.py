"""pocklib.sim: a local Binance USD-M futures exchange (REST + kline websocket) on 127.0.0.1.

It replays candle frames on a simulated clock, matches orders on the replayed price walk and
keeps an exact USDT account. It is the exchange side of pocklib's tests and dry runs and shares
no code with pocklib's client side (brokers, stream, session) except candle-frame loading.

    from pocklib.sim import Simulator, FaultPlan
    with Simulator(frames, speed=300) as sim:
        print(sim.base_url, sim.ws_url)
"""

from pocklib.sim.faults import FaultPlan
from pocklib.sim.simulator import Simulator

__all__ = ["FaultPlan", "Simulator"]
