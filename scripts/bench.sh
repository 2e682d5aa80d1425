#!/usr/bin/env bash
# The end-to-end benchmark (issue 6): the four services on the local stack against a bare
# rdkafka relay through the same hops, in one run. Starts the stack if needed, builds the
# release binaries (same cargo target dir as run.sh), then runs bench-e2e with the arguments
# given, e.g.
#   scripts/bench.sh                         # 1 000 000 events at full speed, 50 000 at 5 000/s
#   scripts/bench.sh --events 200000 --rate 0,5000 --paced-events 100000
#   scripts/bench.sh --skip-relay -X linger.ms=5 --json /tmp/bench.json
# `scripts/bench.sh --help` lists every flag. It prints a table and one summary line on stdout.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$ROOT/scripts/stack.sh" up
say "building the release binaries (cargo target dir: $CARGO_TARGET_DIR) ..."
(cd "$ROOT" && cargo build --release --bins --quiet)
exec "$CARGO_TARGET_DIR/release/bench-e2e" --bin-dir "$CARGO_TARGET_DIR/release" "$@"
