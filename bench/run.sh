#!/usr/bin/env bash
# Runs the fan-out benchmark: restreamer, Icecast2 and the minimal baseline
# under the same load. Arguments go to `restreamer-bench run` (see --help);
# `bench/run.sh --smoke` is the few-second check that CI runs.
# Icecast2: apt-get install icecast2 (skipped in --smoke when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p restreamer -p restreamer-bench
exec target/release/restreamer-bench run "$@"
