//! Command-line and environment configuration of the Kafka side, shared by every service.
//!
//! Each flag has an environment variable (`env = "…"`), so the same binary is configured by
//! flags in a terminal and by env files in compose. `config/local.env` and
//! `config/compose.env` hold the documented defaults of the two set-ups.

use std::time::Duration;

use clap::{Args, ValueEnum};
use rdkafka::ClientConfig;

/// Where the Kafka cluster is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, host:port[,host:port…].
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    pub bootstrap_servers: String,

    /// Extra librdkafka property, key=value; repeatable (security.protocol, sasl.*, linger.ms…).
    /// Applied last, so it overrides the service's defaults; the keys the runtime owns are
    /// refused at start. In the environment, separate several with `;` and write a `;` inside a
    /// value as `\;` (values are never shown, in --help or in errors: they may hold a password).
    #[arg(
        short = 'X',
        long = "kafka-property",
        value_name = "KEY=VALUE",
        env = "KAFKA_PROPERTIES",
        hide_env_values = true,
        value_parser = PropertyList::parse
    )]
    pub properties: Vec<PropertyList>,

    /// How long to wait for the broker to answer at start-up before giving up.
    #[arg(long, env = "KAFKA_CONNECT_TIMEOUT", default_value = "15s", value_parser = positive_duration)]
    pub connect_timeout: Duration,
}

/// One `-X` argument, or the whole of `KAFKA_PROPERTIES`: its `key=value` entries, split on
/// `;` (`\;` is a literal `;`). Parsing never fails, because a parse error would print the
/// text, which may be a fragment of a password: entries that are not `key=value` are kept as
/// positions only, and [`KafkaArgs::check`] refuses them at start without showing them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PropertyList {
    /// The `key=value` entries, in order (the key trimmed, the value as written).
    pub pairs: Vec<(String, String)>,
    /// 1-based positions of the entries that are not `key=value` (their text is not kept).
    pub malformed: Vec<usize>,
}

/// Keys only: a `{:?}` of the settings (a panic message, a debug line) must not show a password.
impl std::fmt::Debug for PropertyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.pairs.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("PropertyList").field("keys", &keys).field("malformed", &self.malformed).finish()
    }
}

impl PropertyList {
    /// Splits `s` into entries on unescaped `;`; never fails (see the type).
    pub fn parse(s: &str) -> Result<Self, std::convert::Infallible> {
        let mut entries = vec![String::new()];
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            let entry = entries.last_mut().expect("one entry at least");
            match c {
                '\\' if chars.peek() == Some(&';') => entry.push(chars.next().unwrap_or(';')),
                ';' => entries.push(String::new()),
                c => entry.push(c),
            }
        }
        let mut list = Self::default();
        for (i, entry) in entries.iter().filter(|e| !e.trim().is_empty()).enumerate() {
            match entry.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => list.pairs.push((k.trim().to_owned(), v.to_owned())),
                _ => list.malformed.push(i + 1),
            }
        }
        Ok(list)
    }
}

/// A duration flag that must be longer than zero (a zero interval spins a loop or panics a
/// timer; a zero deadline gives up at once).
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

impl KafkaArgs {
    /// These settings with `pairs` added as `-X` properties (for tests and tools).
    pub fn with_properties(mut self, pairs: &[(&str, &str)]) -> Self {
        let pairs = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.properties.push(PropertyList { pairs, malformed: Vec::new() });
        self
    }

    /// The `-X` properties, in the order given (a later one overrides an earlier one).
    pub fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties.iter().flat_map(|l| l.pairs.iter()).map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `-X key`, the last one given; None when unset.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties().filter(|(k, _)| *k == key).last().map(|(_, v)| v)
    }

    /// A librdkafka configuration: bootstrap servers, then `defaults`, then the `-X` overrides.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in self.properties() {
            config.set(k, v);
        }
        // librdkafka refuses a consumer whose poll interval is below its session timeout (45 s
        // unless set): an -X max.poll.interval.ms the services accept (their session timeout is
        // 10 s) would break every other consumer a binary makes (cluster checks, the counter's
        // counts reader) and stop it at start. Those follow the services' session timeout then.
        let session_set =
            self.property("session.timeout.ms").is_some() || defaults.iter().any(|(k, _)| *k == "session.timeout.ms");
        if !session_set && self.property("max.poll.interval.ms").is_some() {
            config.set("session.timeout.ms", crate::runtime::SESSION_TIMEOUT_MS);
        }
        config
    }

    /// Whether consumers rebalance cooperatively: librdkafka does so when every assignor in
    /// `partition.assignment.strategy` is cooperative (only `cooperative-sticky` is), and
    /// eagerly otherwise (its default, `range,roundrobin`).
    pub fn cooperative(&self) -> bool {
        self.property("partition.assignment.strategy")
            .is_some_and(|v| v.split(',').all(|s| s.trim() == "cooperative-sticky"))
    }
}

/// Settings every consuming service shares (the runtime loop's knobs).
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// The Kafka cluster.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Consumer group id (default: the service's name). Instances with the same id share the
    /// input's partitions.
    #[arg(long, env = "GROUP_ID")]
    pub group_id: Option<String>,

    /// Static membership (KIP-345): this instance's own fixed id in its group, e.g. a
    /// StatefulSet pod's name; each running instance needs a different one. A restart within the
    /// session timeout gets the same partitions back with no rebalance, but a stopped instance
    /// does not leave the group either: its partitions wait for it for the whole session
    /// timeout, which then defaults to 45 s (`-X session.timeout.ms` sets it) so a restart fits.
    #[arg(long, env = "GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,

    /// Dead-letter topic for poison input (default: `<input topic>.dlq`).
    #[arg(long, env = "DLQ_TOPIC")]
    pub dlq_topic: Option<String>,

    /// Most input records awaiting acknowledgement of their outputs at once.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 20_000)]
    pub max_in_flight: usize,

    /// Most bytes of outputs (values and keys) awaiting acknowledgement at once: with large
    /// records the count alone would let memory grow without bound.
    #[arg(long, env = "MAX_IN_FLIGHT_BYTES", default_value_t = 16 << 20)]
    pub max_in_flight_bytes: usize,

    /// Input records larger than this many bytes are dead-lettered unparsed.
    #[arg(long, env = "MAX_RECORD_BYTES", default_value_t = 1 << 20)]
    pub max_record_bytes: usize,

    /// At shutdown and at a revocation, how long to wait for in-flight records before
    /// committing. Must be below the consumer's `session.timeout.ms` (10 s by default) and
    /// `max.poll.interval.ms`, or a drain gets the member thrown out of its group: refused at
    /// start otherwise.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "8s", value_parser = positive_duration)]
    pub drain_timeout: Duration,

    /// Log line format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,

    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g. 127.0.0.1:9101.
    /// Off when unset.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Delivery guarantee: at-least-once (outputs acknowledged before offsets commit; a crash
    /// can duplicate), or exactly-once (outputs and offsets in one Kafka transaction, inputs
    /// read committed; needs a broker with transactions).
    #[arg(long, env = "GUARANTEE", value_enum, default_value_t)]
    pub guarantee: Guarantee,

    /// Exactly-once: this instance's transactional id, different for every instance. Default:
    /// `<group>-<host name>-<process id>`, unique among the instances running (two on one host,
    /// or a container whose HOSTNAME is not exported, no longer fence each other in turn).
    /// Zombies are fenced by the group's generation either way (offsets are sent with the
    /// consumer's group metadata); what a stable id adds is that a restarted instance aborts its
    /// predecessor's open transaction at once, instead of read-committed readers waiting up to
    /// `transaction.timeout.ms` for it: set it from a stable name (a StatefulSet pod's) for that.
    #[arg(long, env = "TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,

    /// Exactly-once: how long a transaction collects inputs before it commits (latency versus
    /// per-transaction overhead).
    #[arg(long, env = "TRANSACTION_INTERVAL", default_value = "100ms", value_parser = positive_duration)]
    pub transaction_interval: Duration,
}

/// A service's delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Guarantee {
    /// Offsets commit after the outputs are acknowledged: nothing lost, duplicates possible.
    #[default]
    AtLeastOnce,
    /// Outputs and offsets commit in one transaction: nothing lost, nothing doubled for
    /// read-committed readers.
    ExactlyOnce,
}

impl ServiceArgs {
    /// Starts the metrics and health endpoints when `--metrics-addr` is set.
    pub async fn observe(
        &self,
        readiness: &crate::observe::Readiness,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), crate::observe::ObserveError> {
        self.observe_with(readiness, axum::Router::new(), cancel).await
    }

    /// [`ServiceArgs::observe`] with the service's own read-only `routes` beside the endpoints.
    pub async fn observe_with(
        &self,
        readiness: &crate::observe::Readiness,
        routes: axum::Router,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), crate::observe::ObserveError> {
        match self.metrics_addr {
            Some(addr) => crate::observe::serve(addr, readiness.clone(), routes, cancel.clone()).await,
            None => Ok(()),
        }
    }
}

/// This machine's name (HOSTNAME, else /etc/hostname), for default ids.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    #[test]
    fn a_short_poll_interval_brings_the_other_consumers_session_timeout_down_with_it() {
        let kafka = |props: &[&str]| {
            let args: Vec<&str> = ["x"].into_iter().chain(props.iter().flat_map(|p| ["-X", *p])).collect();
            Cli::try_parse_from(args).unwrap().kafka
        };
        let short = kafka(&["max.poll.interval.ms=15000"]).client_config(&[("group.id", "g")]);
        assert_eq!(short.get("session.timeout.ms"), Some(crate::runtime::SESSION_TIMEOUT_MS));
        assert!(short.create::<rdkafka::consumer::BaseConsumer>().is_ok(), "librdkafka accepts it");
        let both = kafka(&["max.poll.interval.ms=60000", "session.timeout.ms=30000"]).client_config(&[]);
        assert_eq!(both.get("session.timeout.ms"), Some("30000"), "one set by -X stays");
        assert_eq!(kafka(&[]).client_config(&[]).get("session.timeout.ms"), None, "untouched otherwise");
    }

    #[test]
    fn kafka_properties_override_defaults() {
        let cli =
            Cli::try_parse_from(["x", "--bootstrap-servers", "b:1", "-X", "linger.ms=50", "-X", "debug=broker,topic"])
                .unwrap();
        let c = cli.kafka.client_config(&[("linger.ms", "5"), ("acks", "all")]);
        assert_eq!(c.get("linger.ms"), Some("50"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("debug"), Some("broker,topic"));
        assert_eq!(c.get("bootstrap.servers"), Some("b:1"));
    }

    #[test]
    fn cooperative_only_when_every_assignor_is() {
        let strategy = |v: &str| {
            Cli::try_parse_from(["x", "-X", &format!("partition.assignment.strategy={v}")]).unwrap().kafka.cooperative()
        };
        assert!(!Cli::try_parse_from(["x"]).unwrap().kafka.cooperative(), "librdkafka's default is eager");
        assert!(strategy("cooperative-sticky"));
        assert!(strategy(" cooperative-sticky "));
        assert!(!strategy("range,cooperative-sticky"), "mixed assignors rebalance eagerly");
        assert!(!strategy("roundrobin"));
    }

    #[test]
    fn a_semicolon_splits_properties_and_an_escaped_one_is_kept() {
        let list = PropertyList::parse(r"sasl.username=u; sasl.password=a\;b=c;;linger.ms=5;").unwrap();
        let pairs: Vec<(&str, &str)> = list.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(pairs, [("sasl.username", "u"), ("sasl.password", "a;b=c"), ("linger.ms", "5")]);
        assert!(list.malformed.is_empty());
    }

    #[test]
    fn an_entry_that_is_not_key_value_is_kept_as_a_position_only() {
        // The second half of a password cut at an unescaped `;`: never parsed into an error
        // message (clap prints the text of a value its parser refuses).
        let cli = Cli::try_parse_from(["x", "-X", "sasl.password=hunter;2secret", "-X", "linger.ms=5"]).unwrap();
        assert_eq!(cli.kafka.properties[0].malformed, [2]);
        assert_eq!(cli.kafka.property("sasl.password"), Some("hunter"));
        assert!(!format!("{:?}", cli.kafka.properties).contains("2secret"));
        assert!(!format!("{:?}", cli.kafka).contains("hunter"), "a Debug of the settings shows no value");
    }

    #[test]
    fn a_zero_duration_is_refused_by_name() {
        let err = Cli::try_parse_from(["x", "--connect-timeout", "0s"]).unwrap_err().to_string();
        assert!(err.contains("--connect-timeout") && err.contains("longer than zero"), "{err}");
    }
}
