"""``python -m pocklib sim``: prints its base URL first, serves, stops on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

from pocklib.sim.cli import main


def test_cli_serves_sample_until_interrupted():
    p = subprocess.Popen([sys.executable, "-m", "pocklib", "sim", "--data", "sample",
                          "--speed", "300", "--port", "0", "--api-key", "K", "--api-secret", "S"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = p.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        info = json.loads(urllib.request.urlopen(url + "/fapi/v1/exchangeInfo", timeout=10).read())
        assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
        rows = json.loads(urllib.request.urlopen(
            url + "/fapi/v1/klines?symbol=ETHUSDT&interval=5m&limit=5", timeout=10).read())
        assert len(rows) == 5
    finally:
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err


def test_cli_bad_arguments_fail_clearly(capsys):
    assert main(["--data", "/nonexistent/file.parquet", "--speed", "0"]) == 2
    assert "nonexistent" in capsys.readouterr().err
    assert main(["--speed", "-3"]) == 2
    assert "speed" in capsys.readouterr().err
