"""The README fits on two screens, the docs site builds offline under --strict, and the notebooks
stay clean: no outputs committed, a Lab save changes neither the notebook (through
tools/nbclean.py) nor its paired .py."""

from __future__ import annotations

import copy
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "tools"))
import nbclean  # noqa: E402  (tools/ is not a package)


def test_readme_fits_on_two_screens_and_says_what_a_newcomer_needs() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for needed in ('pip install -e ".[dev]"', "jupyter lab", "notebooks/backtest.ipynb", "pytest --nbval",
                   "papermill", "i_understand_real_money", "POCKLIB_ALLOW_LIVE", "charts.html", "mkdocs serve",
                   "nbconvert --to html"):
        assert needed in text, needed


def test_readme_points_only_at_docs_pages_that_exist() -> None:
    text = (ROOT / "README.md").read_text()
    pages = set(re.findall(r"docs/[\w/-]+\.md", text))
    assert pages, "the README names the docs pages"
    assert [p for p in pages if not (ROOT / p).is_file()] == []


def test_every_docs_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")]
    assert [p for p in pages if p not in nav] == [], "a page nobody can reach from the site"


def test_install_brings_jupyterlab_with_its_extensions() -> None:
    import tomllib

    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = " ".join(proj["dependencies"])
    for pkg in ("jupyterlab", "ipywidgets", "plotly", "jupytext"):
        assert pkg in deps or pkg in " ".join(proj["optional-dependencies"]["dev"]), pkg
    dev = " ".join(proj["optional-dependencies"]["dev"])
    for pkg in ("mkdocs", "mkdocs-material", "mkdocstrings", "playwright"):
        assert pkg in dev, pkg


class _NoNetwork:
    """Any connection to a host other than this machine fails the build (the site must build
    offline)."""

    def __enter__(self) -> _NoNetwork:
        self._orig = socket.socket.connect

        def connect(sock: socket.socket, address: object) -> None:
            host = address[0] if isinstance(address, tuple) else str(address)
            if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
                raise OSError(f"network use while building the docs: {address}")
            self._orig(sock, address)  # type: ignore[arg-type]

        socket.socket.connect = connect  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        socket.socket.connect = self._orig  # type: ignore[method-assign]


def test_mkdocs_builds_strict_and_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")
    cfg = load_config(str(ROOT / "mkdocs.yml"), strict=True, site_dir=str(tmp_path / "site"))
    with _NoNetwork():
        build(cfg)
    site = tmp_path / "site"
    api = (site / "api" / "display" / "index.html").read_text()
    assert "pocklib.charts.price_figure" in api and "whole period" in api, "API page from the docstrings"
    index = (site / "index.html").read_text()
    assert "fonts.googleapis.com" not in index, "the site would ask a font CDN"


# -- notebooks stay clean -------------------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_no_outputs_or_run_metadata(path: Path) -> None:
    text = path.read_text()
    assert nbclean.dumps(nbclean.clean(json.loads(text))) == text, f"run `python tools/nbclean.py --write {path}`"


def _as_lab_saves_it(nb: dict) -> dict:
    """What a JupyterLab run + save adds: outputs, counts, language_info, widget state, cell
    timing and view metadata."""
    nb = copy.deepcopy(nb)
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python"}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] == "code":
            c["execution_count"] = i
            c["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["x\n"]}]
            c["metadata"]["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
            c["metadata"]["scrolled"] = True
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_lab_save_leaves_notebook_and_paired_py_unchanged(path: Path) -> None:
    committed = json.loads(path.read_text())
    saved = _as_lab_saves_it(committed)
    assert nbclean.dumps(nbclean.clean(saved)) == path.read_text(), "git would see a change"
    py = path.with_suffix(".py")
    assert py.is_file(), "every notebook is paired with a py:percent file"
    written = jupytext.writes(nbformat.reads(json.dumps(saved), as_version=4), fmt="py:percent")
    assert written == py.read_text(), "a Lab save would rewrite the paired .py"


def test_nbclean_as_a_git_filter_and_a_check(tmp_path: Path) -> None:
    nb = _as_lab_saves_it(json.loads(NOTEBOOKS[0].read_text()))
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "nbclean.py")], input=json.dumps(nb),
                         capture_output=True, text=True, check=True)
    assert run.stdout == NOTEBOOKS[0].read_text()
    dirty = tmp_path / "x.ipynb"
    dirty.write_text(json.dumps(nb))
    check = subprocess.run([sys.executable, str(ROOT / "tools" / "nbclean.py"), str(dirty)], capture_output=True, text=True)
    assert check.returncode == 1 and "has outputs" in check.stderr
    subprocess.run([sys.executable, str(ROOT / "tools" / "nbclean.py"), "--write", str(dirty)], check=True)
    assert dirty.read_text() == NOTEBOOKS[0].read_text()
    assert "filter=nbclean" in (ROOT / ".gitattributes").read_text()


def test_readme_ambiguous_candle_figures_are_the_samples() -> None:
    """The README's example (ambiguous candles on the sample, P&L range, resolved by 1m candles)
    is what the backtest computes today: a change to the sample or the rules must update it."""
    from pocklib import backtest, history
    from pocklib.rules import Rules

    text = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(r"sample (\d+) such candles, P&L between (−?[\d.]+) and (−?[\d.]+) USD\. "
                  r"`-p detail 1m` orders them on 1m candles \((\d+) of (\d+) resolved\)", text)
    assert m, "the README's ambiguous-candle example"
    n, worst, best, resolved, of = m.groups()
    frames = {s: history.load("sample", s) for s in ("BTCUSDT", "ETHUSDT")}
    st = backtest.run(frames, Rules()).stats["combined"]
    assert (int(n), int(of)) == (st["ambiguous"], st["ambiguous"])
    assert (float(worst.replace("−", "-")), float(best.replace("−", "-"))) == (
        round(st["total_pnl"], 2), round(st["total_pnl_best"], 2))
    detail = backtest.run(frames, Rules(detail="1m"),
                          detail_frames={s: history.load("sample", s, interval="1m") for s in frames}).stats["combined"]
    assert int(resolved) == detail["ambiguous_resolved"]
