#!/usr/bin/env bash
# Installs, if missing, the programs the tests check our output against:
#   nginx    Debian's nginx, whose secure_link module verifies the "nginx" scheme's URLs
#   openssl  verifies the "cloudfront" scheme's RSA signatures
# Idempotent; needs root or sudo only when something is missing.
set -euo pipefail

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ ${#missing[@]} -eq 0 ] && exit 0

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
