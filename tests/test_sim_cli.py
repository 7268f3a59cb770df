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


def test_ctrl_c_right_after_the_url_stops_cleanly(monkeypatch, capsys):
    """A SIGINT that lands while the CLI still prints its banner (a script that reads the URL
    line and stops at once) ended with a traceback and status -2, found under load in the suite."""
    import pocklib.sim.cli as cli

    stopped = []
    real_stop = cli.Simulator.stop

    def stop(self):
        stopped.append(True)
        real_stop(self)

    def banner(*args, **kwargs):
        if str(args[0]).startswith("streams:"):
            raise KeyboardInterrupt
        print_(*args, **kwargs)

    print_ = print
    monkeypatch.setattr(cli.Simulator, "stop", stop)
    monkeypatch.setattr(cli, "print", banner, raising=False)
    try:
        status = main(["--data", "sample", "--speed", "0", "--port", "0"])
    except KeyboardInterrupt:
        status = "Ctrl-C escaped main()"
    assert status == 0
    assert stopped == [True]
    assert capsys.readouterr().out.startswith("http://127.0.0.1:")
