#!/usr/bin/env python3
"""Checks deploy/kubernetes/ offline (no cluster here), against the real binaries.

1. `kubectl kustomize` renders every overlay.
2. `kubernetes-validate --strict` accepts every built-in object (Kubernetes 1.30 and 1.37).
3. The KEDA and Prometheus-operator objects validate against their CRD schemas (the npm
   packages @kubernetes-models/keda and @kubernetes-models/prometheus-operator).
4. `promtool check rules` and `promtool test rules` pass for the PrometheusRule's groups.
5. `yamllint` accepts every file.
6. Every container's command and flags parse (its binary run with `--help` appended: clap
   rejects an unknown flag first), every variable set in `env` is read by its binary, and every
   ConfigMap key by some binary loading it (as check_compose.py does for compose).
7. What must agree does: each ScaledObject scales a Deployment or StatefulSet (of the kind its
   scaleTargetRef names) of the same consumer group on that service's input topic, with
   maxReplicaCount at most the topics' partitions, and the workload leaves its replicas to the
   scaler; the grace period exceeds the drain deadline plus the bounded close and the watchdog.
8. Static membership: a consumer StatefulSet (components/static-membership) takes
   GROUP_INSTANCE_ID from its pod's name and names an existing Service as its serviceName; a
   consumer Deployment sets no GROUP_INSTANCE_ID (its pod names change on every rollout).

Usage: check_kubernetes.py BIN_DIR TOOLS_DIR   (TOOLS_DIR: the venv's bin/ and node_modules/ of
`scripts/deploy-tools.sh`; prints one line per check, exits 1 on the first failure)
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy", "kubernetes")
OVERLAYS = ["local", "production"]
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
# Read by libraries, not by clap: the AWS SDK's chain.
LIBRARY_VARS = {"AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED", "RUST_LOG"}
# Each consuming service's input topic variable (its ScaledObject must watch that topic).
INPUT_TOPIC_VAR = {"enricher": "SENSORS_TOPIC", "detector": "ENRICHED_TOPIC", "counter": "ALERTS_TOPIC"}
# The bound on a stop after SIGTERM: the drain, then the consumer's close (1 s) and the
# watchdog's margin (2 s in all, README "A stop never hangs").
STOP_MARGIN_S = 2
# The kinds the consuming services run as: Deployments, or StatefulSets with static membership.
WORKLOADS = ("Deployment", "StatefulSet")
CONSUMER_LABEL = ("app.kubernetes.io/component", "consumer")

# Validates each JSON object of argv[1] (a list) with the model class its kind names.
NODE_VALIDATOR = r"""
const [objsFile, modules] = process.argv.slice(1);
const objs = JSON.parse(require('fs').readFileSync(objsFile, 'utf8'));
const packages = {'keda.sh/v1alpha1': 'keda/keda.sh/v1alpha1', 'monitoring.coreos.com/v1': 'prometheus-operator/monitoring.coreos.com/v1'};
(async () => {
  let failed = 0;
  for (const o of objs) {
    const name = `${o.kind}/${o.metadata.name}`;
    try {
      // By file, not by name: prometheus-operator's package exports ES modules only (.js there).
      const base = `${modules}/@kubernetes-models/${packages[o.apiVersion]}/${o.kind}`;
      const file = require('fs').existsSync(`${base}.mjs`) ? `${base}.mjs` : `${base}.js`;
      const model = (await import(file))[o.kind];
      new model(o).validate();
      console.log(`PASS schema ${name}`);
    } catch (e) { console.log(`FAIL schema ${name}: ${e.message}`); failed++; }
  }
  process.exit(failed ? 1 : 0);
})();
"""


def fail(msg):
    print(f"FAIL {msg}")
    sys.exit(1)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def duration_s(value):
    m = re.fullmatch(r"(\d+)(ms|s|m)", value)
    if not m:
        fail(f"cannot read the duration {value!r}")
    n, unit = int(m[1]), m[2]
    return n / 1000 if unit == "ms" else n * (60 if unit == "m" else 1)


def env_vars(help_text):
    return set(re.findall(r"\[env: ([A-Z0-9_]+)", help_text))


def check_container(bin_dir, kind, name, container, config, helps):
    command = container.get("command", [])
    if not command:
        fail(f"{kind}/{name}: no command")
    binary = os.path.join(bin_dir, command[0])
    # `--help` last: clap refuses an unknown flag or subcommand before printing help.
    r = run([binary, *command[1:], *container.get("args", []), "--help"])
    if r.returncode != 0:
        fail(f"{kind}/{name}: {' '.join(command + container.get('args', []))}: {r.stderr.strip()}")
    help_text = r.stdout
    reads = env_vars(help_text)
    for var in container.get("env", []):
        if var["name"] not in reads | LIBRARY_VARS:
            fail(f"{kind}/{name}: env {var['name']} is read by no flag of `{' '.join(command)}`")
    if any(ref.get("configMapRef") for ref in container.get("envFrom", [])):
        helps.append(reads)
    print(f"PASS flags and env {kind}/{name}: {' '.join(command + container.get('args', []))}")
    return reads


def check_overlay(overlay, bin_dir, tools_dir, tmp):
    r = run(["kubectl", "kustomize", os.path.join(DEPLOY, "overlays", overlay)])
    if r.returncode != 0:
        fail(f"kubectl kustomize overlays/{overlay}: {r.stderr.strip()}")
    rendered = os.path.join(tmp, f"{overlay}.yaml")
    with open(rendered, "w") as f:
        f.write(r.stdout)
    objs = [o for o in yaml.safe_load_all(r.stdout) if o]
    print(f"PASS kustomize overlays/{overlay}: {len(objs)} objects")

    # Built-in groups have no dot (v1, apps/v1, batch/v1, policy/v1); CRDs' do (keda.sh).
    builtin = [o for o in objs if "." not in o["apiVersion"].split("/")[0]]
    custom = [o for o in objs if o not in builtin]
    builtin_file = os.path.join(tmp, f"{overlay}-builtin.yaml")
    with open(builtin_file, "w") as f:
        yaml.safe_dump_all(builtin, f)
    for version in KUBERNETES_VERSIONS:
        r = run([os.path.join(tools_dir, "bin", "kubernetes-validate"), "--strict", "--quiet", "-k", version, builtin_file])
        if r.returncode != 0:
            fail(f"kubernetes-validate {version} overlays/{overlay}: {(r.stdout + r.stderr).strip()}")
    print(f"PASS kubernetes-validate --strict overlays/{overlay}: {len(builtin)} objects, Kubernetes {' and '.join(KUBERNETES_VERSIONS)}")

    if custom:
        custom_file = os.path.join(tmp, f"{overlay}-custom.json")
        with open(custom_file, "w") as f:
            json.dump(custom, f)
        r = run(["node", "-e", NODE_VALIDATOR, custom_file, os.path.join(tools_dir, "node_modules")])
        print(r.stdout.rstrip())
        if r.returncode != 0:
            fail(f"CRD schemas of overlays/{overlay}: {r.stderr.strip()}")

    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    (config,) = by_kind["ConfigMap"].values()
    data = config["data"]
    helps = []
    reads = {}
    for kind in (*WORKLOADS, "Job"):
        for name, o in by_kind.get(kind, {}).items():
            pod = o["spec"]["template"]["spec"]
            for container in pod["containers"]:
                reads[name] = check_container(bin_dir, kind, name, container, data, helps)
            if kind in WORKLOADS:
                drain = duration_s(data.get("DRAIN_TIMEOUT", "8s"))
                grace = pod.get("terminationGracePeriodSeconds", 30)
                if grace <= drain + STOP_MARGIN_S:
                    fail(f"{kind}/{name}: terminationGracePeriodSeconds {grace} s is not above the drain ({drain} s) + {STOP_MARGIN_S} s")
    read_by_someone = set().union(*helps) | LIBRARY_VARS
    unread = sorted(set(data) - read_by_someone)
    if unread:
        fail(f"overlays/{overlay}: ConfigMap keys no binary reads: {', '.join(unread)}")
    print(f"PASS overlays/{overlay}: every ConfigMap key ({len(data)}) is read by a binary loading it")

    check_static_membership(overlay, by_kind)

    partitions = int(data.get("OPS_TOPIC_PARTITIONS", "0"))
    for name, so in by_kind.get("ScaledObject", {}).items():
        ref = so["spec"]["scaleTargetRef"]
        target = ref["name"]
        # KEDA's defaults: apps/v1 Deployment.
        ref_kind, ref_api = ref.get("kind", "Deployment"), ref.get("apiVersion", "apps/v1")
        kinds = [k for k in WORKLOADS if target in by_kind.get(k, {})]
        if not kinds:
            fail(f"ScaledObject/{name} scales {target}, which is no Deployment or StatefulSet here")
        if (ref_api, ref_kind) != ("apps/v1", kinds[0]):
            fail(f"ScaledObject/{name} scales {ref_api} {ref_kind} {target}, but {target} is an apps/v1 {kinds[0]}")
        if "replicas" in by_kind[kinds[0]][target]["spec"]:
            fail(f"{kinds[0]}/{target} sets replicas, which every apply would reset under ScaledObject/{name}")
        (trigger,) = so["spec"]["triggers"]
        meta = trigger["metadata"]
        group = meta["consumerGroup"]
        if group != target:  # GROUP_ID unset: each service's group is its name
            fail(f"ScaledObject/{name}: consumerGroup {group} is not {target}'s group")
        topic_var = INPUT_TOPIC_VAR[target]
        if meta["topic"] != data[topic_var]:
            fail(f"ScaledObject/{name}: topic {meta['topic']} is not {target}'s input ({topic_var}={data[topic_var]})")
        if meta.get("bootstrapServersFromEnv") not in data:
            fail(f"ScaledObject/{name}: bootstrapServersFromEnv names no variable of the target's ConfigMap")
        if so["spec"]["maxReplicaCount"] > partitions:
            fail(f"ScaledObject/{name}: maxReplicaCount {so['spec']['maxReplicaCount']} > {partitions} partitions")
        print(f"PASS ScaledObject/{name}: {ref_kind}/{target}, group {group}, topic {meta['topic']}, at most {so['spec']['maxReplicaCount']} of {partitions} partitions")

    for name, rule in by_kind.get("PrometheusRule", {}).items():
        rules_dir = os.path.join(tmp, f"{overlay}-rules")
        os.makedirs(rules_dir, exist_ok=True)
        with open(os.path.join(rules_dir, "rules.yaml"), "w") as f:
            yaml.safe_dump(rule["spec"], f, sort_keys=False, allow_unicode=True)
        test = os.path.join(DEPLOY, "components", "monitoring", "alerts.test.yaml")
        with open(test) as src, open(os.path.join(rules_dir, "alerts.test.yaml"), "w") as dst:
            dst.write(src.read())
        for args in (["check", "rules", "rules.yaml"], ["test", "rules", "alerts.test.yaml"]):
            r = run(["promtool", *args], cwd=rules_dir)
            if r.returncode != 0:
                fail(f"promtool {' '.join(args)} (PrometheusRule/{name}): {(r.stdout + r.stderr).strip()}")
        alerts = [a["alert"] for g in rule["spec"]["groups"] for a in g["rules"] if "alert" in a]
        with open(test) as f:
            tested = set(re.findall(r"alertname: (\w+)", f.read()))
        untested = sorted(set(alerts) - tested)
        if untested:
            fail(f"PrometheusRule/{name}: alerts without a test: {', '.join(untested)}")
        print(f"PASS promtool check and test rules PrometheusRule/{name}: {len(alerts)} alerts, each tested")


def check_static_membership(overlay, by_kind):
    """Static members need stable, unique ids: their pods' names, which only a StatefulSet keeps."""
    for kind in WORKLOADS:
        for name, o in by_kind.get(kind, {}).items():
            if o["metadata"].get("labels", {}).get(CONSUMER_LABEL[0]) != CONSUMER_LABEL[1]:
                continue
            env = [var for c in o["spec"]["template"]["spec"]["containers"] for var in c.get("env", [])]
            ids = [var for var in env if var["name"] == "GROUP_INSTANCE_ID"]
            if kind == "Deployment":
                if ids:
                    fail(f"overlays/{overlay} Deployment/{name}: GROUP_INSTANCE_ID on a Deployment, whose pod names change on every rollout")
                continue
            field = [var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for var in ids]
            if field != ["metadata.name"]:
                fail(f"overlays/{overlay} StatefulSet/{name}: GROUP_INSTANCE_ID is not set (once) from the pod's metadata.name")
            service = o["spec"].get("serviceName")
            if service not in by_kind.get("Service", {}):
                fail(f"overlays/{overlay} StatefulSet/{name}: serviceName {service} names no Service here")
            print(f"PASS static membership overlays/{overlay} StatefulSet/{name}: GROUP_INSTANCE_ID from metadata.name, serviceName {service}")


def main(bin_dir, tools_dir):
    r = run([os.path.join(tools_dir, "bin", "yamllint"), "-c", os.path.join(DEPLOY, ".yamllint"), DEPLOY])
    if r.returncode != 0:
        fail(f"yamllint deploy/kubernetes: {r.stdout.strip()}")
    print("PASS yamllint deploy/kubernetes")
    with tempfile.TemporaryDirectory() as tmp:
        for overlay in OVERLAYS:
            check_overlay(overlay, bin_dir, tools_dir, tmp)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
