#!/usr/bin/env bash
# The end-to-end benchmark (issues 6 and 12): the four services on the local stack against two
# rdkafka relays through the same hops (`relay`: the runtime's design; `bare`: BaseConsumer +
# BaseProducer, offsets stored after each flush), in one run. Starts the stack if needed, builds
# the release binaries (same cargo target dir as run.sh), then runs bench-e2e with the arguments
# given, e.g.
#   scripts/bench.sh       # 1 000 000 events at full speed, then 10 s each at 1 000, 5 000, 20 000/s
#   scripts/bench.sh --events 200000 --rate 0,5000 --paced-events 100000
#   scripts/bench.sh --systems pipeline,bare --paced-seconds 30 --json /tmp/bench.json
#   scripts/bench.sh --skip-relay -X linger.ms=5     # the pipeline only (= --systems pipeline)
# `scripts/bench.sh --help` lists every flag. It prints two tables, a summary line and one line
# per offered rate (CPU µs/event, output rate, the pipeline's ratios to both relays) on stdout.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$ROOT/scripts/stack.sh" up
say "building the release binaries (cargo target dir: $CARGO_TARGET_DIR) ..."
(cd "$ROOT" && cargo build --release --bins --quiet)
exec "$CARGO_TARGET_DIR/release/bench-e2e" --bin-dir "$CARGO_TARGET_DIR/release" "$@"
