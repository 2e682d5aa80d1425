//! The fault-injection suite, short: a smaller stream and fewer kills than the full run
//! (`scripts/faults.sh`), every kind of fault, both guarantees. Nothing may be lost or wrong and
//! the counter's windows must be exact. In exactly-once mode the local transactional broker
//! shows aborted records to read-committed readers (`docs/transactions.md`), so a kill that
//! lands inside a commit leaves that one transaction's records doubled: duplicates are bounded
//! by one transaction per kill of a producing service, far below what at-least-once repeats.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::collections::HashMap;

/// `key=value` fields of a summary line.
fn fields(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace().filter_map(|f| f.split_once('=')).collect()
}

/// How many kills hit `service` (`service:N` in the line).
fn kill_count(line: &str, service: &str) -> Option<usize> {
    let at = line.find(service)? + service.len();
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[test]
fn short_fault_run_loses_nothing_in_either_mode() {
    pipeline_testkit::needs_stack!(Kafka, S3, BrokerBuilds);
    let out = std::process::Command::new(e2e::bin("faults"))
        .args(["--events", "4000", "--rate", "400", "--kills", "6", "--counter-kills", "2"])
        .args(["--pause", "3s", "--s3-outage", "4s", "--mode", "both", "--seed", "7"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("faults ")).collect();
    assert_eq!(lines.len(), 2, "one summary per mode:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in lines {
        let f = fields(line);
        let eos = f["mode"] == "exactly-once";
        assert_eq!((f["events"], f["kills"]), ("4000", "6"), "{line}");
        assert_eq!((f["lost"], f["wrong"], f["window_mismatches"]), ("0", "0", "0"), "{line}");
        assert_eq!((f["broker_pauses"], f["s3_outages"]), ("1", "2"), "{line}");
        assert_eq!(f["broker_restarts"], if eos { "0" } else { "1" }, "{line}");
        assert!(line.contains("counter:"), "the counter was killed: {line}");
        if eos {
            // One transaction: ~100 ms of input at 400 events/s, with a wide margin.
            let producer_kills: usize = ["enricher:", "detector:"].iter().filter_map(|k| kill_count(line, k)).sum();
            let dup: usize = f["duplicated"].parse().unwrap();
            assert!(dup <= producer_kills * 150, "more than a transaction per kill doubled: {line}");
        }
    }
    assert!(out.status.success());
}
