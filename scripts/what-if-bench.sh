#!/usr/bin/env bash
# How fast `ops what-if` reads: 1 000 000 enriched events (COUNT to change) on an in-memory
# Nisshi of its own (the stack's S3-backed one is slower to fill than what is measured), dims and
# rules in the stack's S3 under a fresh prefix; prints the time to fill, then two timed runs of
# `ops what-if` (wall, CPU, peak RSS) and the first report. Uses the release build
# (`cargo build --release`; R=<dir> for another).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
"$ROOT/scripts/stack.sh" up
eval "$("$ROOT/scripts/stack.sh" paths)"
cd "$ROOT"
R=${R:-$CARGO_TARGET_DIR/release}
port=${PORT:-19192}
"$NISSHI_BIN" broker --listener-url tcp://127.0.0.1:$port --advertised-listener-url tcp://127.0.0.1:$port --storage-engine memory://wi/ --group-initial-rebalance-delay 0s >/dev/null 2>&1 &
broker=$!
trap 'kill $broker' EXIT
sleep 2
B=(--bootstrap-servers 127.0.0.1:$port)
P=whatif-$(date +%s)
S=(--s3-bucket spark --dims-prefix $P/data/dims)
for t in wi-sensors wi-enriched wi-sensors.dlq; do "$R/ops" topics create $t --partitions 3 "${B[@]}"; done
"$R/generator" dims "${S[@]}" --rules-prefix $P/data/rules --cars 1000 --seed 7
t0=$(date +%s.%N)
"$R/generator" run "${S[@]}" "${B[@]}" --topic wi-sensors --rate 0 --count ${COUNT:-1000000} --seed 7 --start-time 2026-12-07T00:00:00Z --time-step 10ms >/dev/null
echo "generated in $(echo "$(date +%s.%N) - $t0" | bc) s"
"$R/enricher" "${B[@]}" "${S[@]}" --input-topic wi-sensors --output-topic wi-enriched --group-id wi-e 2>/dev/null &
enricher=$!
t0=$(date +%s.%N)
until "$R/ops" topics describe wi-enriched "${B[@]}" 2>/dev/null | awk -v n="${COUNT:-1000000}" '/^topic/ {split($4,a,"="); exit !(a[2]>=n)}'; do sleep 1; done
echo "enriched in $(echo "$(date +%s.%N) - $t0" | bc) s"
kill $enricher; wait $enricher || true
kia=$(mktemp)
cat > "$kia" <<'JSON'
{"overrides": [{"brand": "Kia", "max_speed": 90, "max_rpm": 5500}, {"model_id": 7, "gear_rule": false}]}
JSON
for run in 1 2; do
  /usr/bin/time -f "what-if run $run: %e s wall, %U s user, %S s sys, %M KiB max RSS" "$R/ops" what-if --rules "$kia" "${B[@]}" "${S[@]}" --rules-prefix $P/data/rules --enriched-topic wi-enriched > "$kia.out-$run"
done
cat "$kia.out-1"
