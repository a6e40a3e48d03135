#!/usr/bin/env bash
# The page's own tests (scripts/test.sh runs them after cargo test):
#   1. its JavaScript's unit tests: formatting, chart scales, reading signed URLs
#      (node --test web/logic.test.mjs);
#   2. the browser test: Debian's Chromium, driven by playwright-core, plays the page
#      against scripts/demo.sh (nginx secure_link origin + video-server) and checks the
#      video plays through the signed URL, the view arrives, the chart, a tampered token's
#      error (tests/browser/page.test.mjs); screenshots in target/browser-test/.
# Without Node.js (20 or later), Chromium or playwright-core these say SKIPPED and why;
# under CI (CI set) they fail instead. scripts/install-test-tools.sh installs Chromium and
# playwright-core.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ]; then
  message="the page's JavaScript tests need Node.js 20 or later (found: $(node --version 2>/dev/null || echo none))"
  if [ -n "${CI:-}" ]; then
    echo "test-page: $message" >&2
    exit 1
  fi
  echo -e "\n*** SKIPPED: $message ***\n" >&2
  exit 0
fi

node --test web/logic.test.mjs
started=$(date +%s%N)
node --test tests/browser/page.test.mjs
echo "test-page: the browser test took $(( ($(date +%s%N) - started) / 1000000 )) ms" >&2
