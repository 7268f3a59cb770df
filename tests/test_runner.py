"""Notebook-facing parameter handling of pocklib.runner (no connection is made)."""

import os

import pytest

from pocklib.runner import PARAMS, notebook_params, plan


def test_notebook_params_takes_defined_names_and_rejects_typos():
    before = {"In", "Out"}
    ns = {"In": [], "Out": {}, "os": os, "_hidden": 1, "hours": 2, "venue": "sim", "fast": 5}
    assert notebook_params(ns, before) == {"hours": 2, "venue": "sim", "fast": 5}
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['huors'\]"):
        notebook_params({**ns, "huors": 4}, before)


def test_headline_says_loudly_what_happens():
    env = {"BINANCE_API_KEY": "k" * 64, "BINANCE_API_SECRET": "s" * 64, "POCKLIB_ALLOW_LIVE": "1"}
    live = plan("binance", env=env, venue="live", i_understand_real_money=True)
    assert "**REAL MONEY**" in live.headline()
    assert "k" * 64 not in live.headline() and "s" * 64 not in live.headline()
    dry = plan("paper", env={}, venue="testnet", hours=2)
    text = dry.headline()
    assert text.startswith("## Dry run") and "no order is sent" in text and "after 2 h" in text


def test_live_without_the_env_opt_in_is_refused_before_connecting():
    env = {"BINANCE_API_KEY": "k" * 64, "BINANCE_API_SECRET": "s" * 64}
    with pytest.raises(ValueError, match="POCKLIB_ALLOW_LIVE"):
        plan("binance", env=env, venue="live", i_understand_real_money=True)
    assert set(PARAMS) >= {"venue", "hours", "speed", "session_id", "i_understand_real_money"}
