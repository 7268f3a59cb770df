"""A JupyterLab server on 127.0.0.1 for the browser tests, over a copy of the notebooks.

The notebooks are copied to a temporary root with test settings appended to their
``parameters`` cell (as ``papermill -p`` does), so nothing in the repository is touched, even by
Lab's autosave. Lab's settings, workspaces and runtime files live in the same temporary folder;
update checks and news are off (no network).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/notebooks/{name}?token={self.token}&reset"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def copy_notebook(root: Path, name: str, params: dict[str, Any]) -> Path:
    """``notebooks/<name>`` (+ its .py and jupytext.toml) copied under ``root`` with ``params``
    appended to the parameters cell."""
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "jupytext.toml", root / "jupytext.toml")
    nb = json.loads((ROOT / "notebooks" / name).read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"])
            cell["source"] = src + "\n# test settings (tests/labkit.py)\n" + "".join(
                f"{k} = {v!r}\n" for k, v in params.items())
    dst = root / "notebooks" / name
    dst.write_text(json.dumps(nb, indent=1))
    return dst


@contextmanager
def lab_server(root: Path, timeout_s: float = 60.0) -> Iterator[Lab]:
    """``jupyter lab`` on 127.0.0.1 with a token, serving ``root``; stopped on exit."""
    token = secrets.token_hex(16)
    port = _free_port()
    home = root / ".lab"
    for d in ("config", "data", "runtime", "settings", "workspaces"):
        (home / d).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    for name in ("POCKLIB_SIM_URL", "POCKLIB_SIM_API_KEY", "POCKLIB_SIM_API_SECRET", "POCKLIB_ALLOW_LIVE"):
        env.pop(name, None)
    # user settings: no news or update checks (they ask the network), no autosave
    for plugin, value in (("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
                          ("docmanager-extension/plugin", {"autosave": False})):
        f = home / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI runs as root
        cmd_root = ["--allow-root"]
    else:
        cmd_root = []
    log = root / "lab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--expose-app-in-browser",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--ServerApp.port_retries=0",
           "--LabApp.extension_manager=readonly",  # the default "pypi" manager asks PyPI
           f"--LabApp.user_settings_dir={home / 'settings'}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
           *cmd_root]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield Lab(url, token, root, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- driving a notebook -----------------------------------------------------------------------------
# started, not awaited: the command's promise resolves only when every cell has run
RUN_ALL = "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }"

STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent.trim());
  return {
    prompts,
    errors: [...panel.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
              .map(e => e.textContent).filter(t => /Error|Traceback/.test(t)),
    plots: [...panel.querySelectorAll('.js-plotly-plot')].map(d => ({
      svg: !!d.querySelector('svg.main-svg'),
      traces: d.querySelectorAll('g.trace').length,
      title: (d.querySelector('.gtitle') || {textContent: ''}).textContent })),
    sliders: panel.querySelectorAll('.widget-slider, .jupyter-widgets.widget-hslider').length,
    dropdowns: panel.querySelectorAll('.widget-dropdown').length,
  };
}"""


def wait_kernel_ready(page: Any, timeout_ms: int = 60_000) -> None:
    """Wait until the notebook is open and its kernel is idle."""
    page.wait_for_function(
        "() => { const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " return p && p.sessionContext && p.sessionContext.session && p.sessionContext.session.kernel"
        " && p.sessionContext.session.kernel.status === 'idle'; }", timeout=timeout_ms)


def wait_all_ran(page: Any, timeout_ms: int) -> dict[str, Any]:
    """Wait until every code cell shows an execution count (or an error stops the run)."""
    page.wait_for_function(
        f"() => {{ const s = ({STATE_JS})(); if (!s) return false;"
        " if (s.errors.length) return true;"
        " return s.prompts.length > 0 && s.prompts.every(p => /\\[\\d+\\]/.test(p)); }",
        timeout=timeout_ms, polling=500)
    state: dict[str, Any] = page.evaluate(STATE_JS)
    return state


def move_slider(page: Any, description: str, key: str = "ArrowRight") -> None:
    """Focus the handle of the ipywidgets slider labelled ``description`` and press ``key``
    (one step), as a person would with the keyboard."""
    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text=description)).first
    handle = slider.locator(".noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.click()
    handle.press(key)
