#!/usr/bin/env bash
# The fault-injection suite, full run: 100 000 events through all services in each guarantee
# mode while services are killed (20 times, 5 of them the counter), the broker is paused for
# 10 s and restarted, and S3 is cut off at the enricher's start and during a dims refresh.
# Prints one summary line per mode. Flags go to the `faults` binary (`--help` lists them);
# e.g. `scripts/faults.sh --mode at-least-once --events 20000`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$ROOT/scripts/stack.sh" up
eval "$("$ROOT/scripts/stack.sh" paths)"
export NISSHI_BIN TANSU_BIN
cd "$ROOT"
say "building (cargo target dir: $CARGO_TARGET_DIR) ..."
cargo build --release --bins
exec "$CARGO_TARGET_DIR/release/faults" "$@"
