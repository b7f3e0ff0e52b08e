#!/usr/bin/env bash
# Chart.js for the dashboard (/dashboard), vendored from npm so the server needs no CDN:
# re-run to refresh it (the version is pinned here; MIT licence copied beside it).
set -euo pipefail
VERSION=4.6.2
target="$(dirname "$0")/../src/streamrec/serving/static"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
(cd "$scratch" && npm pack --silent "chart.js@${VERSION}" >/dev/null && tar xzf "chart.js-${VERSION}.tgz")
cp "$scratch/package/dist/chart.umd.min.js" "$target/chart.umd.min.js"
cp "$scratch/package/LICENSE.md" "$target/chart.js-LICENSE.md"
echo "vendored chart.js ${VERSION} into ${target}"
