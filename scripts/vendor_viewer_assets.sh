#!/usr/bin/env bash
# Reproduce the web viewer's vendored browser libraries from npm at pinned versions.
#
#   scripts/vendor_viewer_assets.sh            # rewrite rsembed_store/query/viewer/static/vendor/
#
# The built, minified files are committed so that `pip install rsembed-store` gives a
# working offline map and /docs without npm; this script is how they were made and how a
# version bump is made (edit the pins, run it, run tests/query/test_viewer.py, which checks
# every vendored file's URLs against a reviewed list). Each library's licence travels with it.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=rsembed_store/query/viewer/static/vendor

DECK=deck.gl@9.4.0            # WebGL layers (H3HexagonLayer, TileLayer, ...)
H3=h3-js@4.5.0                # H3 in the browser; deck.gl's bundle expects it as the global `h3`
ARROW=apache-arrow@21.2.0     # reads the Arrow IPC streams the viewer endpoints send
SWAGGER=swagger-ui-dist@5.36.0  # /docs without a CDN

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo '{"private": true}' > "$work/package.json"
npm install --silent --no-audit --no-fund --prefix "$work" "$DECK" "$H3" "$ARROW" "$SWAGGER"
nm="$work/node_modules"

rm -rf "$DEST"
mkdir -p "$DEST/deck.gl" "$DEST/h3-js" "$DEST/apache-arrow" "$DEST/swagger-ui"
cp "$nm/deck.gl/dist.min.js" "$nm/deck.gl/LICENSE" "$DEST/deck.gl/"
cp "$nm/h3-js/dist/h3-js.umd.js" "$nm/h3-js/LICENSE" "$DEST/h3-js/"
cp "$nm/apache-arrow/Arrow.es2015.min.js" "$nm/apache-arrow/LICENSE.txt" "$DEST/apache-arrow/" 2>/dev/null \
  || cp "$nm/apache-arrow/Arrow.es2015.min.js" "$nm/apache-arrow/LICENSE" "$DEST/apache-arrow/"
cp "$nm/swagger-ui-dist/swagger-ui-bundle.js" "$nm/swagger-ui-dist/swagger-ui.css" \
   "$nm/swagger-ui-dist/swagger-ui-bundle.js.LICENSE.txt" "$nm/swagger-ui-dist/LICENSE" \
   "$nm/swagger-ui-dist/NOTICE" "$nm/swagger-ui-dist/favicon-32x32.png" "$DEST/swagger-ui/"
# the pins, as the server and the docs report them
printf '%s\n' "$DECK" "$H3" "$ARROW" "$SWAGGER" > "$DEST/VERSIONS"
du -sh "$DEST"
