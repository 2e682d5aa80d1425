//! docker-compose.yaml cannot run here (no Docker engine), so it is checked against the real
//! binaries: `docker-compose config` accepts it, every service's command parses, and every
//! variable of its env file is read by someone (`scripts/check_compose.py`).

use std::process::Command;

#[test]
fn compose_file_matches_the_binaries() {
    let generator = e2e::bin("generator");
    let bin_dir = generator.parent().expect("bin dir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/check_compose.py");
    // Debian's python3 carries PyYAML (a dependency of its docker-compose package).
    let out = Command::new("/usr/bin/python3").arg(script).arg(bin_dir).output().expect("run check_compose.py");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report.lines().filter(|l| l.starts_with("PASS service ")).count(), 5, "{report}");
}
