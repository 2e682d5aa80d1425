#!/usr/bin/env bash
# Runs the whole pipeline on the local stack: starts the stack (installing it the first time),
# builds the services, writes the dimension tables if they are missing, then starts the
# generator, enricher, detector and counter and shows the counter's window table.
# Ctrl-C stops the services cleanly (the stack keeps running: `scripts/stack.sh down`).
#
# Settings come from config/local.env; the environment overrides them, e.g.
#   GENERATOR_RATE=500 COUNTER_TRIGGER=5s scripts/run.sh
#   RUN_FOR=60 scripts/run.sh        # stop by itself after 60 s
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

t0=$(now)
"$ROOT/scripts/stack.sh" up
if [[ ! -d $CARGO_TARGET_DIR/release/deps ]]; then
  say "first build of the project (release): about 16 min on 2 cores, once; cargo is quiet until it ends"
fi
say "building the services (release; cargo target dir: $CARGO_TARGET_DIR) ..."
(cd "$ROOT" && cargo build --release --bins --quiet)
BIN=$CARGO_TARGET_DIR/release
LOG_DIR=$STATE_DIR/logs
mkdir -p "$LOG_DIR"

"$BIN/generator" dims --if-missing

# The one place that decides how often the table prints: the counter's own default is the
# seed's 1-minute trigger (`--trigger`, compose keeps it); here 10 s, so something shows soon.
export COUNTER_TRIGGER=${COUNTER_TRIGGER:-10s}

pids=()
stop_all() {
  trap - INT TERM EXIT
  say "stopping the services ..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  say "stopped; logs in $LOG_DIR"
}
trap stop_all INT TERM EXIT

# The consuming services run until stopped; the generator may end by itself (GENERATOR_COUNT).
# Metrics, health and (counter) the dashboard on 127.0.0.1:9101..9103, as in docker-compose.
consumers=()
port=9101
for svc in enricher detector; do
  METRICS_ADDR=127.0.0.1:$port "$BIN/$svc" 2>"$LOG_DIR/$svc.log" &
  consumers+=($!)
  port=$((port + 1))
done
# The counter's table is this script's output; its log lines go to its log file.
METRICS_ADDR=127.0.0.1:9103 "$BIN/counter" 2>"$LOG_DIR/counter.log" &
consumers+=($!)
"$BIN/generator" run >"$LOG_DIR/generator.log" 2>&1 &
pids=("${consumers[@]}" $!)
say "pipeline running: generator → $SENSORS_TOPIC → enricher → $ENRICHED_TOPIC → detector → $ALERTS_TOPIC → counter"
say "service logs: $LOG_DIR/{generator,enricher,detector,counter}.log; the counter prints its table every $COUNTER_TRIGGER"
say "dashboard: http://127.0.0.1:9103/  metrics: http://127.0.0.1:910{1,2,3}/metrics"
say "pipeline started $(($(now) - t0)) s after scripts/run.sh began (installs and builds included)"

if [[ -n ${RUN_FOR:-} ]]; then
  sleep "$RUN_FOR"
else
  wait -n "${consumers[@]}" || true
  say "a service exited; see its log in $LOG_DIR"
fi
