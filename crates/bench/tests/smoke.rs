//! A smoke run of the end-to-end benchmark with a tiny N on the local stack: it completes, its
//! figures parse and every count is exact. No timing is asserted (the machine is shared).

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use bench::Report;

#[test]
fn tiny_end_to_end_bench_completes_with_exact_counts() {
    pipeline_testkit::needs_stack!(Kafka, S3);
    let dir = std::env::temp_dir().join(pipeline_testkit::unique("bench-smoke"));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bench-e2e"))
        .args(["--events", "2000", "--paced-events", "500", "--rate", "0,5000"])
        .arg("--json")
        .arg(&json)
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench-e2e failed ({}):\n{stdout}\n{stderr}", out.status);

    let report: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let phases: Vec<(&str, f64, u64)> = report.phases.iter().map(|p| (p.system.as_str(), p.rate, p.events)).collect();
    assert_eq!(
        phases,
        vec![
            ("pipeline", 0.0, 2000),
            ("relay", 0.0, 2000),
            ("bare", 0.0, 2000),
            ("pipeline", 5000.0, 500),
            ("relay", 5000.0, 500),
            ("bare", 5000.0, 500)
        ]
    );
    for p in &report.phases {
        assert!(p.exact, "{p:?}");
        assert!(p.expected_final > 0 && p.expected_final < p.events, "{p:?}");
        assert_eq!(p.counted_final, p.expected_final, "{p:?}");
        assert_eq!(p.topic_records, [p.events, p.events, p.expected_final], "{p:?}");
        assert_eq!(p.latency.samples, p.expected_final, "a latency for every alert: {p:?}");
        assert!(p.seconds > 0.0 && p.events_per_s > 0.0, "{p:?}");
        assert!(p.latency.p50_ms <= p.latency.p99_ms && p.latency.p99_ms <= p.latency.max_ms, "{p:?}");
        for q in &p.processes {
            assert!(q.peak_rss_mib > 0.0 && q.cpu_s >= 0.0, "{q:?}");
            let per_event = q.cpu_s * 1e6 / p.events as f64;
            assert!((q.cpu_us_per_event - per_event).abs() < 1e-6, "{q:?}");
        }
        let total: f64 = p.processes.iter().map(|q| q.cpu_us_per_event).sum();
        assert!((p.cpu_us_per_event - total).abs() < 1e-6, "{p:?}");
        assert!(p.cpu_us_per_event_without_source < p.cpu_us_per_event, "{p:?}");
        assert!(p.input_per_s > 0.0 && p.output_per_s > 0.0, "{p:?}");
        assert_eq!(p.keeps_up.is_some(), p.rate > 0.0, "{p:?}");
    }
    // The three systems count the same alerts of the same events.
    assert_eq!(report.phases[0].expected_final, report.phases[1].expected_final);
    assert_eq!(report.phases[0].expected_final, report.phases[2].expected_final);
    let names: Vec<&str> = report.phases[2].processes.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["bare-source", "bare-hop1", "bare-hop2", "bare-sink"]);
    assert_eq!(report.rates.len(), 2);
    assert!(report.rates.iter().all(|r| r.vs_relay.is_some() && r.vs_bare.is_some()), "{:?}", report.rates);
    let names: Vec<&str> = report.phases[0].processes.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["generator", "enricher", "detector", "counter"]);
    for q in &report.phases[0].processes[1..] {
        assert!(q.start_to_ready_ms.is_some() && q.group_join_ms.is_some(), "{q:?}");
    }
    assert!(report.ratio().is_some());

    // The printed table carries the same figures and one summary line.
    assert_eq!(stdout.lines().filter(|l| l.starts_with("summary: throughput ")).count(), 1, "{stdout}");
    assert!(stdout.contains("counts exact"), "{stdout}");
    for offered in ["full speed: ", "5000/s: "] {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(offered)).unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains("CPU µs/event pipeline") && line.contains("pipeline ÷ bare"), "{line}");
    }
    for p in &report.phases {
        let offered = if p.rate == 0.0 { "full speed".to_owned() } else { format!("{:.0}/s", p.rate) };
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&p.system) && l.contains(&offered) && l.contains(" yes "))
            .unwrap_or_else(|| panic!("no row for {} at {offered}:\n{stdout}", p.system));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert!(cells.contains(&p.events.to_string().as_str()), "{row}");
        assert!(cells.contains(&p.counted_final.to_string().as_str()), "{row}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
