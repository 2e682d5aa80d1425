#!/usr/bin/env bash
# Installs (once, cached) the offline checkers of deploy/kubernetes/ and prints the directory
# scripts/check_kubernetes.py takes: a venv (bin/: kubernetes-validate, yamllint, python with
# PyYAML) and node_modules/ (the KEDA and Prometheus-operator CRD schemas). kubectl and promtool
# come from the machine (scripts/test.sh installs Debian's prometheus for promtool).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBERNETES_VALIDATE_VERSION=1.37.0
YAMLLINT_VERSION=1.38.0
KEDA_MODELS_VERSION=0.4.2
PROMETHEUS_OPERATOR_MODELS_VERSION=6.0.0
TOOLS=$CACHE_DIR/deploy-tools
STAMP=$TOOLS/installed-$KUBERNETES_VALIDATE_VERSION-$YAMLLINT_VERSION-$KEDA_MODELS_VERSION-$PROMETHEUS_OPERATOR_MODELS_VERSION

if [[ ! -e $STAMP ]]; then
  log=$CACHE_DIR/deploy-tools.log
  mkdir -p "$TOOLS"
  say "installing the Kubernetes manifest checkers into $TOOLS (PyPI kubernetes-validate, yamllint; npm @kubernetes-models/keda, prometheus-operator: about 30-60 s, once; log: $log) ..."
  t0=$(now)
  {
    [[ -x $TOOLS/bin/python ]] || python3 -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install --disable-pip-version-check \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "yamllint==$YAMLLINT_VERSION" PyYAML
    npm install --prefix "$TOOLS" --no-audit --no-fund --no-save \
      "@kubernetes-models/keda@$KEDA_MODELS_VERSION" \
      "@kubernetes-models/prometheus-operator@$PROMETHEUS_OPERATOR_MODELS_VERSION"
  } >"$log" 2>&1 || { tail -n 5 "$log" >&2; die "installing the manifest checkers failed (last lines above, log: $log)"; }
  touch "$STAMP"
  say "  installed in $(($(now) - t0)) s"
fi
command -v kubectl >/dev/null || die "kubectl is missing (it renders the kustomize overlays): install it and rerun"
command -v promtool >/dev/null || die "promtool is missing: apt-get install prometheus (scripts/test.sh does it as root)"
printf '%s\n' "$TOOLS"
