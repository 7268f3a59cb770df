#!/usr/bin/env bash
# Rebuild pocklib/assets/plotly-pocklib.min.js.gz (needs node + npm; run after a plotly upgrade:
# tests/test_charts_offline.py fails when plotly.py's plotly.js version and this bundle's differ).
# Usage: tools/plotly_bundle/build.sh [plotly.js version, default: the one plotly.py ships]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
version="${1:-$(python -c 'import plotly.offline as o; print(o.get_plotlyjs_version())')}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/entry.js" "$work/"
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --ignore-scripts "plotly.js@$version" esbuild@0.28.1 >/dev/null
banner="/* plotly.js v$version (pocklib bundle: scatter, bar, heatmap, candlestick; tools/plotly_bundle) | MIT license, Copyright 2012-2026 Plotly, Inc. */"
# the maplibre CSS imported by plotly's registry serves map traces only: not bundled
npx esbuild entry.js --bundle --minify --format=iife --global-name=Plotly --target=es2016 \
    --define:global=window --define:define.amd=false --alias:stream=stream-browserify \
    --loader:.css=empty --legal-comments=none "--banner:js=$banner" --outfile=plotly-pocklib.min.js
gzip -9 -n -c plotly-pocklib.min.js > "$root/pocklib/assets/plotly-pocklib.min.js.gz"
ls -la "$root/pocklib/assets/plotly-pocklib.min.js.gz"
