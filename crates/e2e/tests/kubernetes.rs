//! deploy/kubernetes/ cannot be applied here (no cluster), so it is checked offline against the
//! real binaries (`scripts/check_kubernetes.py`): every overlay renders, every object validates
//! (built-ins strictly, KEDA and Prometheus-operator objects against their CRD schemas), the
//! alert rules pass `promtool test rules`, every command, flag and variable the manifests set is
//! one its binary reads, and a consumer StatefulSet's group member id is its pod's name.

use std::process::Command;

#[test]
fn kubernetes_manifests_render_validate_and_match_the_binaries() {
    pipeline_testkit::needs_stack!(DeployTools);
    let tools = std::path::PathBuf::from(std::env::var_os("DEPLOY_TOOLS").expect("DEPLOY_TOOLS"));
    let generator = e2e::bin("generator");
    let bin_dir = generator.parent().expect("bin dir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/check_kubernetes.py");
    let out = Command::new(tools.join("bin/python"))
        .arg(script)
        .arg(bin_dir)
        .arg(&tools)
        .output()
        .expect("run check_kubernetes.py");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    // Both overlays; the production one with its three ScaledObjects and every alert tested.
    assert_eq!(report.lines().filter(|l| l.starts_with("PASS kustomize overlays/")).count(), 2, "{report}");
    assert_eq!(report.lines().filter(|l| l.starts_with("PASS ScaledObject/")).count(), 3, "{report}");
    assert_eq!(report.lines().filter(|l| l.starts_with("PASS flags and env ")).count(), 12, "{report}");
    // Production's consumers are static members (StatefulSets), local's are not.
    assert_eq!(
        report.lines().filter(|l| l.starts_with("PASS static membership overlays/production ")).count(),
        3,
        "{report}"
    );
    assert!(!report.contains("PASS static membership overlays/local "), "{report}");
    assert!(
        report.contains("PASS promtool check and test rules PrometheusRule/pipeline: 9 alerts, each tested"),
        "{report}"
    );
}
