#!/usr/bin/env bash
# Many low-rate streams: 300 UDP streams at 0.5 Mbit/s, no viewers, for 10
# minutes; the memory of each binary given, side by side. Arguments go to
# `restreamer-bench streams` (see --help), e.g.
#   bench/streams.sh --binaries target/release/restreamer,/tmp/restreamer-main
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p restreamer -p restreamer-bench
exec target/release/restreamer-bench streams "$@"
