#!/usr/bin/env bash
# Time from connect to the first keyframe byte, instantstart on and off,
# H.264 GOPs of 1, 2 and 5 s (needs ffmpeg). Arguments go to
# `restreamer-bench keyframe` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p restreamer -p restreamer-bench
exec target/release/restreamer-bench keyframe "$@"
