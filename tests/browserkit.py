"""Headless Chromium for the tests (Debian's ``chromium`` driven by playwright; no browser download).

Every request that leaves 127.0.0.1 (or a file: / data: / blob: URL) is aborted and recorded, so a
page that needs a CDN shows it: its charts stay blank and ``blocked`` names the URL.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
LOCAL = ("file:", "data:", "blob:", "http://127.0.0.1", "ws://127.0.0.1", "about:")


def have_chromium() -> bool:
    return shutil.which("chromium") is not None or shutil.which(CHROMIUM) is not None


@dataclass
class Page:
    """A playwright page plus what it logged: console errors, page errors, blocked requests."""

    page: Any
    console: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def console_errors(self, ignore_blocked: bool = True) -> list[str]:
        """Console errors and uncaught page errors; with ``ignore_blocked`` the "Failed to load
        resource" lines caused by our own blocking of off-machine URLs are left out."""
        out = [t for k, t in self.console if k == "error"
               and not (ignore_blocked and "net::ERR_FAILED" in t)]
        return out + self.errors


@contextmanager
def browser(viewport: tuple[int, int] = (1280, 900)) -> Iterator[Page]:
    """A fresh headless Chromium page with the network limited to this machine."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            ctx = b.new_context(viewport={"width": viewport[0], "height": viewport[1]})
            page = ctx.new_page()
            pg = Page(page)
            page.on("console", lambda m: pg.console.append((m.type, m.text)))
            page.on("pageerror", lambda e: pg.errors.append(str(e)))

            def route(r: Any) -> None:
                url = r.request.url
                if url.startswith(LOCAL):
                    r.continue_()
                else:
                    pg.blocked.append(url)
                    r.abort()

            ctx.route("**/*", route)
            yield pg
        finally:
            b.close()


PLOTS_JS = """(sel) => [...document.querySelectorAll(sel)].map(d => ({
    svg: !!d.querySelector('svg.main-svg'),
    traces: d.querySelectorAll('g.trace, g.heatmaplayer image, g.imagelayer image').length,
    points: d.querySelectorAll('path.point, g.trace path, g.trace .box').length,
    title: (d.querySelector('.gtitle') || {textContent: ''}).textContent,
}))"""


def wait_for_plots(pg: Page, selector: str, expected: int, timeout_ms: int = 30_000) -> list[dict[str, Any]]:
    """Wait until ``expected`` elements match ``selector`` and each holds a drawn plotly SVG;
    returns one dict per plot (svg, traces, points, title)."""
    pg.page.wait_for_function(
        "([sel, n]) => { const d = [...document.querySelectorAll(sel)];"
        " return d.length >= n && d.every(x => x.querySelector('svg.main-svg')); }",
        arg=[selector, expected], timeout=timeout_ms)
    out: list[dict[str, Any]] = pg.page.evaluate(PLOTS_JS, selector)
    return out
