#!/usr/bin/env bash
# Connect storm: 5,000 connects within a second against a hard limit of
# 500 (400 viewers already in), while the health API is timed. Fails if
# the limit did not hold exactly or a health request failed.
#   bench/storm.sh
#   bench/storm.sh --connects 10000 --over 0.5
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p restreamer -p restreamer-bench
exec target/release/restreamer-bench storm "$@"
