"""Test setup for the notebooks under nbval (loaded when pytest collects notebooks/).

nbval cannot pass notebook parameters, so the notebooks' parameters cells read these
environment variables for their defaults (a plain papermill run keeps testnet). The kernels
nbval starts inherit pytest's environment, so setting them here points every notebook at the
local exchange simulator with CI-fast settings.
"""

import os
import tempfile

_out = tempfile.mkdtemp(prefix="pocklib-nbval-")
os.environ.update(
    {
        "POCKLIB_VENUE": "sim",
        "POCKLIB_SPEED": "2400",
        "POCKLIB_HOURS": "1",
        "POCKLIB_LIVE_OUT_DIR": os.path.join(_out, "live"),
        "POCKLIB_DRYRUN_OUT_DIR": os.path.join(_out, "dryrun"),
        "POCKLIB_BACKTEST_OUT_DIR": os.path.join(_out, "backtest"),
    }
)
# These would attach the notebooks to some other running simulator or exchange.
for _name in ("POCKLIB_SIM_URL", "POCKLIB_SIM_API_KEY", "POCKLIB_SIM_API_SECRET", "POCKLIB_ALLOW_LIVE"):
    os.environ.pop(_name, None)
