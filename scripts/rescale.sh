#!/usr/bin/env bash
# The rescaling drill, full run: 12 partitions per topic, the generator steady at 20 000
# events/s, each of enricher, detector and counter scaled 1 -> 4 -> 2 -> 1 instances, every
# instance restarted one by one, one of each SIGKILLed; then `ops audit` must be clean. Once per
# variant (dynamic or static membership, eager or cooperative assignment; about 6-8 min each).
# Prints a Markdown table per variant (the longest pause of any partition, the duplicates and how
# long the lag stayed over a second, per event) and one verdict line. Flags go to the `rescale`
# binary (`--help` lists them), e.g. `scripts/rescale.sh --variants dynamic-cooperative`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# S3 from the stack (dims, checkpoints); the broker is the drill's own Nisshi, in memory.
"$ROOT/scripts/stack.sh" up
eval "$("$ROOT/scripts/stack.sh" paths)"
export NISSHI_BIN
cd "$ROOT"
say "building (cargo target dir: $CARGO_TARGET_DIR) ..."
cargo build --release --bins
exec "$CARGO_TARGET_DIR/release/rescale" "$@"
