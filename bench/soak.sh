#!/usr/bin/env bash
# Soak: 300 clients coming and going against restreamer, 10 minutes by
# default; reports memory, descriptors, threads and tasks from start to
# end, and fails if descriptors or tasks are left once all clients left.
#   bench/soak.sh                 # 10 minutes
#   bench/soak.sh --minutes 60    # the documented long run
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p restreamer -p restreamer-bench
exec target/release/restreamer-bench soak "$@"
