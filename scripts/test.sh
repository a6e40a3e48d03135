#!/usr/bin/env bash
# The project's test command: installs what the tests verify against (nginx, openssl,
# Chromium…), runs `cargo test` with any arguments given, and then, when given none, the
# page's tests (scripts/test-page.sh: its JavaScript's unit tests and the browser test).
# CI runs exactly this.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/install-test-tools.sh"
cd "$root"
cargo test "$@"
if [ $# -eq 0 ]; then
  bash "$root/scripts/test-page.sh"
fi
