#!/usr/bin/env bash
# Installs, if missing, the programs the tests check our output against:
#   nginx    Debian's nginx: its secure_link module verifies the "nginx" scheme's URLs, and
#            its proxy_cache plays the CDN in front of the server
#   openssl  verifies the "cloudfront" scheme's RSA signatures
#   redbot   REDbot, the HTTP linter (PyPI, pinned), judges our caching headers
#   st       Schemathesis (PyPI, pinned) tests the server against docs/openapi.json
#   chromium Debian's Chromium: the browser test (tests/browser/) plays the page in it
#   valgrind Debian's valgrind: bench/instructions.sh counts instructions per request with
#            its callgrind tool
#   playwright-core (npm, pinned by tests/browser/package-lock.json) drives that Chromium;
#            it never downloads a browser of its own
# The PyPI tools go into virtual environments under target/test-tools (cargo clean removes
# them), linked from target/test-tools/bin; the npm package into tests/browser/node_modules.
# Node.js itself (20 or later) is not installed here: Debian's is too old for
# playwright-core, and scripts/test-page.sh says so (under CI, fails) when it is missing.
# Idempotent; needs root or sudo only when a Debian package is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
REDBOT_VERSION="2.7.1"
SCHEMATHESIS_VERSION="4.32.5"

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v callgrind_control >/dev/null 2>&1 || missing+=(valgrind)
if [ ${#missing[@]} -gt 0 ]; then
  as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
  }
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-tools: please install ${missing[*]} (no apt-get here)" >&2
    exit 1
  fi
  echo "installing ${missing[*]} (Debian packages) for the verifier tests" >&2
  as_root apt-get update -qq
  # The package's service is never started: the tests run nginx themselves, on a free port.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

tools="$root/target/test-tools"
# pypi_tool PACKAGE VERSION COMMAND: a virtual environment of its own, linked into bin/.
pypi_tool() {
  local package=$1 version=$2 command=$3 venv="$tools/$1"
  if [ -x "$tools/bin/$command" ] && "$venv/bin/pip" show "$package" 2>/dev/null | grep -x "Version: $version" >/dev/null; then
    return
  fi
  echo "installing $package $version (PyPI) into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$package==$version"
  mkdir -p "$tools/bin"
  ln -sf "$venv/bin/$command" "$tools/bin/$command"
}
pypi_tool redbot "$REDBOT_VERSION" redbot
pypi_tool schemathesis "$SCHEMATHESIS_VERSION" st

# The browser test's driver, exactly as package-lock.json pins it (`npm ci`), unless it is
# there already.
browser="$root/tests/browser"
if command -v npm >/dev/null 2>&1; then
  wanted="$(node -p 'require(process.argv[1]).packages["node_modules/playwright-core"].version' "$browser/package-lock.json")"
  have="$(node -p 'require(process.argv[1]).version' "$browser/node_modules/playwright-core/package.json" 2>/dev/null || true)"
  if [ "$have" != "$wanted" ]; then
    echo "installing playwright-core $wanted (npm) into $browser/node_modules" >&2
    (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
fi
