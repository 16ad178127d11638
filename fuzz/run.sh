#!/usr/bin/env bash
# Runs every fuzz target for a while (default 30 s each: the CI run).
#   fuzz/run.sh                # 30 s per target
#   fuzz/run.sh 3600           # the documented long run: an hour each
#   fuzz/run.sh 600 render     # one target
#   FUZZ_DEV=1 fuzz/run.sh 20  # CI: an unoptimised build, quicker to
#                              # compile, about 10 x fewer runs per second
# Installs cargo-fuzz if it is missing. libFuzzer's instrumentation needs
# nightly flags; on a stable toolchain RUSTC_BOOTSTRAP=1 allows them.
# New inputs go to fuzz/corpus/TARGET (not committed); a failing input is
# saved in fuzz/artifacts/TARGET and the run fails.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(align config render)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
if ! rustc --version | grep -q nightly; then export RUSTC_BOOTSTRAP=1; fi

# Safe Rust: no sanitizer, but debug assertions (overflow checks) on.
flags=(--sanitizer none --debug-assertions)
if [ -n "${FUZZ_DEV:-}" ]; then flags+=(--dev); fi
cargo fuzz build "${flags[@]}"
log=$(mktemp)
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    status=0
    cargo fuzz run "${flags[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(grep -m1 -oE "^Done [0-9]+ runs" "$log" || true)
    echo "fuzz: $target, ${seconds}s: ${runs:-no runs}, exit $status"
    if [ "$status" != 0 ]; then
        grep -E -A20 "panicked|ERROR|SUMMARY" "$log" | head -60 >&2 || tail -40 "$log" >&2
        echo "fuzz: $target failed; the input is in fuzz/artifacts/$target" >&2
        exit 1
    fi
done
