#!/usr/bin/env bash
# Installs what the benchmarks need, idempotently:
#   wrk         from Debian's packages
#   gnuplot     from Debian's packages (gnuplot-nox), for the plots of bench/run.sh
#   autocannon  from npm, pinned in bench/package-lock.json
#   nginx       from Debian's packages: the anchor bench/run.sh measures beside ours
#               (started on its own prefix by bench/nginx-hello.sh, never as the system's)
#   baseline    the Node/Express baseline (bench/baseline/), copied to bench/.work/baseline
#               and installed there with `npm ci`, so that the tree stays clean
# Usage: bench/install.sh [wrk] [gnuplot] [nginx] [autocannon] [baseline]   (no argument: all)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(wrk gnuplot nginx autocannon baseline)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

for tool in "${wanted[@]}"; do
  case "$tool" in
    wrk | gnuplot | nginx)
      # nginx is in /usr/sbin, which a user's PATH may lack.
      if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
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
      source_dir="$here/baseline"
      work_dir="$here/.work/baseline"
      # A new lock file means new packages; a new server.js is only copied.
      if [ ! -d "$work_dir/node_modules" ] ||
        ! cmp -s "$source_dir/package-lock.json" "$work_dir/package-lock.json"; then
        echo "installing the Node/Express baseline (npm ci in bench/.work/baseline)" >&2
        rm -rf "$work_dir"
        mkdir -p "$work_dir"
        cp "$source_dir/package.json" "$source_dir/package-lock.json" "$work_dir/"
        (cd "$work_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
      fi
      cp "$source_dir/server.js" "$work_dir/server.js"
      ;;
    *)
      echo "unknown tool: $tool (expected wrk, gnuplot, nginx, autocannon or baseline)" >&2
      exit 2
      ;;
  esac
done
