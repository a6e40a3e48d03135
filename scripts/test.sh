#!/usr/bin/env bash
# The project's test command: installs what the tests verify against (nginx, openssl), then
# runs `cargo test` with any arguments given. CI runs exactly this.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/install-test-tools.sh"
cd "$root"
exec cargo test "$@"
