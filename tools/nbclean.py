"""Git clean filter for notebooks: what a notebook is without the traces of running it.

``git config filter.nbclean.clean "python tools/nbclean.py"`` (with ``.gitattributes``) makes git
read every ``notebooks/*.ipynb`` through this script: outputs, execution counts, widget state and
the metadata that JupyterLab, papermill or a kernel add are dropped, so running and saving a
notebook in Lab leaves ``git status`` clean. Reads a notebook on stdin (or the files named as
arguments, rewritten in place with ``--write``) and writes it in nbformat's own layout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: notebook metadata that is part of the source (everything else is dropped)
KEEP_NOTEBOOK = ("jupytext", "kernelspec")
#: cell metadata that is part of the source
KEEP_CELL = ("tags",)
#: the kernelspec every committed notebook carries (what JupyterLab writes for this venv's kernel)
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def clean(nb: dict[str, Any]) -> dict[str, Any]:
    """The notebook without outputs, counts, run metadata; kernelspec as :data:`KERNELSPEC`."""
    meta = {k: v for k, v in nb.get("metadata", {}).items() if k in KEEP_NOTEBOOK}
    meta["kernelspec"] = dict(KERNELSPEC)
    cells = []
    for c in nb.get("cells", []):
        c = dict(c)
        c["metadata"] = {k: v for k, v in c.get("metadata", {}).items() if k in KEEP_CELL}
        if c.get("cell_type") == "code":
            c["outputs"] = []
            c["execution_count"] = None
        c.pop("attachments", None) if not c.get("attachments") else None
        cells.append(c)
    return {**nb, "metadata": meta, "cells": cells}


def dumps(nb: dict[str, Any]) -> str:
    """nbformat's layout: 1-space indent, sorted keys, UTF-8, final newline."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    write = "--write" in argv
    files = [a for a in argv if a != "--write"]
    if not files:
        sys.stdout.write(dumps(clean(json.loads(sys.stdin.read()))))
        return 0
    changed = 0
    for f in files:
        p = Path(f)
        text = p.read_text(encoding="utf-8")
        out = dumps(clean(json.loads(text)))
        if out != text:
            changed += 1
            if write:
                p.write_text(out, encoding="utf-8")
            print(f"{f}: {'cleaned' if write else 'has outputs or run metadata'}", file=sys.stderr)
    return 1 if changed and not write else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
