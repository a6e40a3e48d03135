#!/usr/bin/env bash
# Installs what the benchmarks need, idempotently:
#   wrk         from Debian's packages
#   gnuplot     from Debian's packages (gnuplot-nox), for the plots of bench/run.sh
#   autocannon  from npm, pinned in bench/package-lock.json
#   baseline    the Node/Express baseline (../shared/baseline/express), copied to
#               bench/.work/express so that `npm ci` never writes into shared/
# Usage: bench/install.sh [wrk] [gnuplot] [autocannon] [baseline]   (no argument: all)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(wrk gnuplot autocannon baseline)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

for tool in "${wanted[@]}"; do
  case "$tool" in
    wrk | gnuplot)
      if ! command -v "$tool" >/dev/null 2>&1; then
        package="$tool"
        [ "$tool" = gnuplot ] && package=gnuplot-nox
        echo "installing $package (Debian package)" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
      fi
      ;;
    autocannon)
      if [ ! -x "$here/node_modules/.bin/autocannon" ]; then
        echo "installing autocannon (npm ci in bench/)" >&2
        (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
      fi
      ;;
    baseline)
      source_dir="$root/../shared/baseline/express"
      work_dir="$here/.work/express"
      if [ ! -f "$source_dir/server.js" ]; then
        echo "the Node baseline is missing: expected $source_dir/server.js" >&2
        exit 1
      fi
      if [ ! -d "$work_dir/node_modules" ] || ! cmp -s "$source_dir/server.js" "$work_dir/server.js"; then
        echo "installing the Node/Express baseline (npm ci in bench/.work/express)" >&2
        rm -rf "$work_dir"
        mkdir -p "$work_dir"
        cp "$source_dir/server.js" "$source_dir/package.json" "$source_dir/package-lock.json" "$work_dir/"
        (cd "$work_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
      fi
      ;;
    *)
      echo "unknown tool: $tool (expected wrk, gnuplot, autocannon or baseline)" >&2
      exit 2
      ;;
  esac
done
