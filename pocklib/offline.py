"""Plotly figures that stay visible outside JupyterLab: offline HTML and static images.

JupyterLab draws a figure from its ``application/vnd.plotly.v1+json`` output with the plotly.js of
its extension. Everything else (``jupyter nbconvert --to html``, a report's ``charts.html``,
an archived copy opened without network) needs plotly.js in the page itself, with no CDN.

* :data:`BUNDLE`: plotly.js built with only the traces pocklib draws (scatter, bar, heatmap,
  candlestick; ``tools/plotly_bundle``), 1.2 MB, stored gzipped (0.4 MB). The full plotly.min.js
  (4.8 MB) would not fit the 2 MB budget of an executed notebook.
* In a notebook, :func:`setup_notebook` shows the bundle once (gzip + base64, unpacked by the
  browser's ``DecompressionStream``) and makes every ``fig.show()`` send both the plotly JSON
  (for Lab) and an HTML part that draws the same figure with that bundle (for nbconvert).
* :func:`write_html`: a standalone page, plotly.js inlined once (reports).
* :func:`png_images`: static PNGs through kaleido and the system Chromium, when both exist
  (``pip install kaleido`` and ``apt-get install chromium``); None otherwise.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

#: plotly.js with pocklib's traces, gzipped (see tools/plotly_bundle/build.sh).
BUNDLE = Path(__file__).parent / "assets" / "plotly-pocklib.min.js.gz"
#: plotly renderer name registered by :func:`register_renderer`.
RENDERER = "pocklib"
#: marker present in every HTML part that draws a figure (tests look for it).
PLOT_CLASS = "pocklib-plot"


@cache
def plotly_js() -> str:
    """The bundled plotly.js source (str, ~1.2 MB)."""
    return gzip.decompress(BUNDLE.read_bytes()).decode("utf-8")


def bundle_version() -> str:
    """plotly.js version of :data:`BUNDLE` (from its banner), e.g. ``"4.1.1"``."""
    m = re.search(r"plotly\.js v(\d+\.\d+\.\d+)", plotly_js()[:300])
    if m is None:
        raise ValueError(f"{BUNDLE}: no plotly.js version in the banner")
    return m.group(1)


def _script_json(obj: Any) -> str:
    """JSON safe inside a <script> element (no ``</script>`` or ``<!--`` can end it early)."""
    return json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")


# The loader: defines window.Plotly from the gzipped bundle, then draws every queued figure.
# A figure's own script queues itself when plotly.js is not there yet (the unpacking is async).
_QUEUE_JS = (
    "window.pocklibPlot=window.pocklibPlot||function(id,spec){"
    "var draw=function(){var el=document.getElementById(id);if(!el)return;"
    "var img=el.querySelector('img.pocklib-static');if(img)img.remove();"
    "window.Plotly.newPlot(el,spec.data,spec.layout||{},Object.assign({responsive:true},spec.config||{}));};"
    "if(window.Plotly&&window.Plotly.newPlot){draw();}"
    "else{(window.pocklibQueue=window.pocklibQueue||[]).push(draw);}};"
)

_LOADER_JS = (
    "(function(){if(window.Plotly&&window.Plotly.newPlot)return;"
    "if(window.pocklibLoading)return;window.pocklibLoading=true;"
    "var b64=document.getElementById('%(id)s').textContent.trim();"
    "var bin=atob(b64),bytes=new Uint8Array(bin.length);"
    "for(var i=0;i<bin.length;i++)bytes[i]=bin.charCodeAt(i);"
    "if(!window.DecompressionStream){console.warn('pocklib: this browser cannot unpack plotly.js');return;}"
    "var ds=new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));"
    "new Response(ds).text().then(function(code){"
    "var s=document.createElement('script');s.textContent=code;document.head.appendChild(s);"
    "var q=window.pocklibQueue||[];window.pocklibQueue=[];q.forEach(function(f){f();});});})();"
)


def loader_html() -> str:
    """HTML that brings plotly.js into a page once (gzip + base64, ~0.55 MB), then draws the
    figures queued by :func:`figure_html`. Needs a browser with ``DecompressionStream``
    (Chrome 80, Firefox 113, Safari 16.4)."""
    data_id = "pocklib-plotlyjs-" + uuid.uuid4().hex[:8]
    payload = base64.b64encode(BUNDLE.read_bytes()).decode("ascii")
    return (f'<script type="application/octet-stream" id="{data_id}">{payload}</script>'
            f"<script>{_QUEUE_JS}{_LOADER_JS % {'id': data_id}}</script>"
            f'<div class="pocklib-plotlyjs" style="display:none">plotly.js v{bundle_version()} '
            "loaded for offline viewing</div>")


def figure_spec(fig: Any) -> dict[str, Any]:
    """``{"data", "layout", "config"}`` of a figure (``go.Figure`` or dict) as plain JSON
    values: numpy arrays become plotly's base64 typed arrays, times ISO strings."""
    import plotly.io as pio

    spec: dict[str, Any] = json.loads(pio.to_json(fig, validate=False))
    return {"data": spec.get("data", []), "layout": spec.get("layout", {}), "config": spec.get("config", {})}


def figure_html(fig: Any, png: bytes | None = None, div_id: str | None = None) -> str:
    """HTML part drawing ``fig`` (a ``go.Figure`` or its dict) with the page's plotly.js (from
    :func:`loader_html` or an inlined bundle). ``png``: a static image shown until (or instead
    of, without JavaScript) the interactive figure."""
    spec = figure_spec(fig)
    div_id = div_id or "pocklib-" + uuid.uuid4().hex
    height = spec["layout"].get("height") or 450
    img = ""
    if png is not None:
        img = (f'<img class="pocklib-static" alt="chart (static image)" style="max-width:100%" '
               f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">')
    return (f'<div id="{div_id}" class="{PLOT_CLASS}" style="width:100%;min-height:{int(height)}px">{img}</div>'
            f"<script>{_QUEUE_JS}window.pocklibPlot({_script_json(div_id)},{_script_json(spec)});</script>")


def write_html(figures: Sequence[Any], path: str | Path, title: str, intro_html: str = "") -> Path:
    """A standalone HTML page: ``title``, ``intro_html``, then every figure; plotly.js inlined
    once (raw, runs in any browser), no network needed. Returns ``path``."""
    js = plotly_js().replace("</script", "<\\/script")
    parts = [f'<div class="pocklib-figure">{figure_html(f)}</div>' for f in figures]
    page = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><script>{js}</script>"
            "<style>body{font-family:sans-serif;margin:1em 2em}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>{intro_html}{''.join(parts)}</body></html>")
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out


# -- static images ---------------------------------------------------------------------------
@cache
def _kaleido_ready() -> bool:
    """True when kaleido is installed and finds a Chrome/Chromium (checked once)."""
    try:
        import kaleido  # noqa: F401  # optional: static images only
        from choreographer.browsers.chromium import Chromium  # kaleido's browser finder
    except ImportError:
        return False
    try:
        return Chromium.find_browser(skip_local=False) is not None
    except Exception:  # a finder that fails means: no static images, never a failed report
        return False


def png_images(figures: Iterable[Any], width: int = 900, scale: float = 1.0) -> list[bytes] | None:
    """PNG bytes of each figure (``width`` px, height from the figure's layout), or None when
    kaleido or a Chromium is missing or the export fails (images are a fallback, never a
    reason for a report to fail)."""
    figs = list(figures)
    if not figs or not _kaleido_ready():
        return None
    import warnings

    import kaleido
    import plotly.io as pio

    # one browser for the batch (~2.5 s to start, then ~0.3 s a figure), unless one is running
    own = not kaleido._global_server.is_running()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "kopts ignored when using a server": expected
            if own:
                kaleido.start_sync_server(silence_warnings=True)
            return [pio.to_image(f, format="png", width=width, height=f.layout.height or 450, scale=scale)
                    for f in figs]
    except Exception:  # see docstring: a fallback never fails its caller
        return None
    finally:
        if own:
            kaleido.stop_sync_server(silence_warnings=True)


# -- notebooks -------------------------------------------------------------------------------
def mime_bundle(fig: Any, png: bytes | None = None) -> dict[str, Any]:
    """The display bundle of a figure: plotly JSON (JupyterLab), HTML drawing it with the
    loaded bundle (nbconvert, offline viewers), plain text."""
    spec = figure_spec(fig)
    title = spec["layout"].get("title")
    text = title.get("text") if isinstance(title, dict) else title
    return {
        "application/vnd.plotly.v1+json": spec,
        "text/html": figure_html(spec, png=png),
        "text/plain": f"<plotly figure: {text or 'untitled'}>",
    }


class _LabOnly:
    """A figure shown through its plotly JSON only (see :func:`lab_only`)."""

    def __init__(self, fig: Any) -> None:
        self.fig = fig

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"application/vnd.plotly.v1+json": figure_spec(self.fig)}


def lab_only(fig: Any) -> Any:
    """``fig`` displayed as plotly JSON only: for the inside of a widget ``Output``, which only a
    live frontend draws anyway (an HTML part there would double the saved widget state)."""
    return _LabOnly(fig)


def register_renderer(static: bool = False, default: bool = True) -> None:
    """Register the ``"pocklib"`` plotly renderer (see :func:`mime_bundle`) and, with
    ``default``, make it the default (``fig.show()``, figures in widget ``Output``s).
    ``static``: add a PNG inside each figure's HTML (kaleido + Chromium; ~0.3 s and 30-80 KB a
    figure)."""
    import plotly.io as pio
    from plotly.io._base_renderers import MimetypeRenderer

    class _Renderer(MimetypeRenderer):  # type: ignore[misc]  # plotly is untyped
        def to_mimebundle(self, fig_dict: dict[str, Any]) -> dict[str, Any]:
            png = None
            if static:
                import plotly.graph_objects as go

                imgs = png_images([go.Figure(fig_dict)])
                png = imgs[0] if imgs else None
            return mime_bundle(fig_dict, png=png)

    pio.renderers[RENDERER] = _Renderer()
    if default:
        pio.renderers.default = RENDERER


def notebook_renderer() -> str:
    """The renderer for notebook figures: :data:`RENDERER` (registered if needed, without
    changing the default); never plotly's "notebook" renderer, which embeds the full 4.8 MB
    plotly.js into every saved notebook."""
    import plotly.io as pio

    if RENDERER not in pio.renderers:
        register_renderer(default=False)
    return RENDERER


def setup_notebook(static: bool = False) -> None:
    """Call once at the top of a notebook: shows plotly.js for offline viewing (hidden; one
    output of ~0.55 MB) and registers the renderer (:func:`register_renderer`)."""
    from IPython.display import display

    register_renderer(static=static)
    display({"text/html": loader_html(),  # type: ignore[no-untyped-call]  # IPython is untyped
             "text/plain": f"plotly.js v{bundle_version()} for offline viewing"}, raw=True)


def widget_display(widget: Any, note: str = "interactive controls: open this notebook in JupyterLab") -> None:
    """Display an ipywidget with a text fallback for viewers without widgets (nbconvert HTML
    without widget state shows ``note`` instead of the widget's Python repr)."""
    from IPython.display import display

    bundle = {
        "application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                     "model_id": widget.model_id},
        "text/html": f'<p class="pocklib-widget-note"><i>{html.escape(note)}</i></p>',
        "text/plain": note,
    }
    display(bundle, raw=True)  # type: ignore[no-untyped-call]  # IPython is untyped


__all__ = [
    "BUNDLE", "PLOT_CLASS", "RENDERER", "bundle_version", "figure_html", "figure_spec", "lab_only", "loader_html", "mime_bundle",
    "notebook_renderer", "plotly_js", "png_images", "register_renderer", "setup_notebook", "widget_display", "write_html",
]
