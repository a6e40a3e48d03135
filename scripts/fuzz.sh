#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of every parser that takes outside input:
#   http_request   request heads and bodies, in pieces and pipelined
#   token_request  POST /video/token bodies, rendered back and signed by every scheme
#   cdn_file       the --cdns file
#   header_values  Authorization, If-None-Match, Origin, and the list-valued flags
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    default: 60 s for each target
#
# Seeds come from fuzz/corpus/<target> (committed, from the tests); what the fuzzer finds is
# kept in fuzz/work/ (ignored). A crash leaves its input in fuzz/artifacts/<target>/ and
# fails the script: turn it into a regression test. Installs cargo-fuzz if missing; uses the
# nightly toolchain when there is one, else the stable one with RUSTC_BOOTSTRAP=1.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(http_request token_request cdn_file header_values)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (crates.io)" >&2
  cargo install cargo-fuzz --locked --quiet
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

cd "$root"
summary=()
for target in "${targets[@]}"; do
  work="fuzz/work/$target"
  mkdir -p "$work"
  log="fuzz/work/$target.log"
  echo "fuzzing $target for ${seconds} s" >&2
  if ! cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz "$target" "$work" "fuzz/corpus/$target" \
    -- -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz target $target FAILED; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units:/ { print $2 }' "$log" | tail -1)
  speed=$(awk '/stat::average_exec_per_sec:/ { print $2 }' "$log" | tail -1)
  summary+=("$target: ${runs:-?} executions in ${seconds} s (${speed:-?}/s), corpus $(ls "$work" | wc -l) inputs, no crash")
done
printf '%s\n' "${summary[@]}"
