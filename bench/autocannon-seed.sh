#!/usr/bin/env bash
# The load the old service was measured under (docs/api.md, last section), as a script:
#   bench/autocannon-seed.sh [URL]     (default http://localhost:3002/video/token)
# Extra autocannon flags may follow the URL, e.g. --json.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/install.sh" autocannon >&2
url="${1:-http://localhost:3002/video/token}"
shift || true
exec "$here/node_modules/.bin/autocannon" -m POST -b "$(cat "$here/token-body.json")" \
  -H 'Content-type: application/json' -c 1000 -p 1 -d 10 --renderStatusCodes "$@" "$url"
