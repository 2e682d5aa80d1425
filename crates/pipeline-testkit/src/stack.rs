//! Whether the parts of the local stack a test needs are there, asked once per test process.
//!
//! `cargo test --workspace` on a clone with no stack running should say so, not fail sixty
//! times with connection errors: a test that needs the stack starts with [`needs_stack!`](crate::needs_stack!),
//! which returns early when a part is missing, and the first such test of a test binary prints
//! one line naming the group, the missing part and `scripts/test.sh`. Under `scripts/test.sh`
//! (which starts the stack and sets [`REQUIRE_STACK`]) a missing part fails the test instead:
//! the suite never passes by skipping.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

/// Set (to `1`) by `scripts/test.sh`: a test whose stack part is missing fails.
pub const REQUIRE_STACK: &str = "PIPELINE_TESTS_REQUIRE_STACK";

/// A part of the local stack a test can need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The Kafka broker (`KAFKA_BOOTSTRAP_SERVERS`, Nisshi on 127.0.0.1:9092).
    Kafka,
    /// The S3 endpoint (`S3_ENDPOINT`, SeaweedFS on 127.0.0.1:8333).
    S3,
    /// The transactional broker (`TXN_KAFKA_BOOTSTRAP_SERVERS`, Tansu on 127.0.0.1:9094).
    TxnKafka,
    /// The broker builds tests start on ports of their own (`NISSHI_BIN`, `TANSU_BIN`).
    BrokerBuilds,
    /// The offline checkers of `deploy/kubernetes/` (`DEPLOY_TOOLS`, from
    /// `scripts/deploy-tools.sh`; `kubectl` and `promtool` on the PATH).
    DeployTools,
}

impl Part {
    /// Why the part is missing, if it is (a TCP connect, or the files named by the variables).
    fn missing(self) -> Option<String> {
        match self {
            Part::Kafka => unreachable("Kafka", &super::kafka().bootstrap_servers),
            Part::S3 => unreachable("S3", &super::s3(super::TEST_BUCKET).s3_endpoint.unwrap_or_default()),
            Part::TxnKafka => unreachable("the transactional Kafka (Tansu)", &super::txn_kafka().bootstrap_servers),
            Part::BrokerBuilds => ["NISSHI_BIN", "TANSU_BIN"].iter().find_map(|var| match std::env::var_os(var) {
                Some(path) if std::path::Path::new(&path).is_file() => None,
                Some(path) => Some(format!("{var}={} is not a file", std::path::Path::new(&path).display())),
                None => Some(format!("{var} is not set")),
            }),
            Part::DeployTools => match std::env::var_os("DEPLOY_TOOLS") {
                None => Some("DEPLOY_TOOLS is not set".to_owned()),
                Some(dir) if !std::path::Path::new(&dir).join("bin/kubernetes-validate").is_file() => {
                    Some("DEPLOY_TOOLS has no bin/kubernetes-validate".to_owned())
                }
                Some(_) => None,
            },
        }
    }

    /// Asked once per process: every test of a binary gets the same answer.
    fn cached(self) -> &'static Option<String> {
        static ANSWERS: [OnceLock<Option<String>>; 5] = [const { OnceLock::new() }; 5];
        ANSWERS[self as usize].get_or_init(|| self.missing())
    }
}

/// `name` at the first address of `address` (`host:port`, a list, or a URL) does not accept a
/// TCP connection within a second.
fn unreachable(name: &str, address: &str) -> Option<String> {
    let first = address.split(',').next().unwrap_or_default();
    let host_port = first.split("://").last().unwrap_or_default().trim_end_matches('/');
    let addrs: Vec<SocketAddr> = host_port.to_socket_addrs().map(Iterator::collect).unwrap_or_default();
    let up = addrs.iter().any(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok());
    (!up).then(|| format!("{name} at {host_port} does not answer"))
}

/// Whether every part in `needs` is there; `group` names the test binary in the one line a
/// missing part prints. Use it through [`needs_stack!`](crate::needs_stack!).
///
/// # Panics
/// When a part is missing and [`REQUIRE_STACK`] is set.
pub fn stack_has(group: &str, needs: &[Part]) -> bool {
    let Some(why) = needs.iter().find_map(|part| part.cached().as_deref()) else {
        return true;
    };
    assert!(
        std::env::var_os(REQUIRE_STACK).is_none(),
        "{why}: scripts/test.sh started the stack, but this test cannot reach it"
    );
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| {
        // Straight to stderr: the test harness captures `eprintln!` of passing tests.
        let line = format!(
            "skipped: {group} needs the local stack ({why}), its tests pass without running; \
             run scripts/test.sh (it starts the stack) to run them\n"
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    });
    false
}

/// Returns from the test early when a part of the local stack it needs is missing (see
/// [`stack_has`]): `needs_stack!(Kafka, S3);`.
#[macro_export]
macro_rules! needs_stack {
    ($($part:ident),+ $(,)?) => {
        if !$crate::stack_has(
            concat!(env!("CARGO_PKG_NAME"), "::", module_path!()),
            &[$($crate::Part::$part),+],
        ) {
            return;
        }
    };
}
