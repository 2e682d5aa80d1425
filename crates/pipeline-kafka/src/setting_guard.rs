//! Settings that would break a stated guarantee, refused at start with one line naming them.
//!
//! Operators paste settings from blogs; a service must not start with one that silently
//! undoes what it promises. Refused here: `-X` entries that are not `key=value` or that
//! librdkafka rejects, the `-X` keys the runtime owns (offsets are stored only after the
//! outputs are acknowledged; exactly-once sets its own isolation, idempotence and
//! transactional id), acknowledgements weaker than `acks=all`, and a drain deadline a member
//! cannot survive in its group. No message ever shows a property's value, only its key: a
//! value may be a password.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use crate::args::{Guarantee, KafkaArgs};

/// A setting refused at start.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    /// An `-X` / `KAFKA_PROPERTIES` entry without `=`.
    #[error(
        "entry {position} of an -X / KAFKA_PROPERTIES value is not key=value (not shown: it may hold a secret); \
         write each as key=value, separated by `;`, and a `;` inside a value as `\\;`"
    )]
    NotKeyValue {
        /// 1-based position within its `-X` argument or `KAFKA_PROPERTIES`.
        position: usize,
    },
    /// librdkafka refused an `-X` property (unknown key, invalid value).
    #[error("-X {key}: {reason}")]
    Rejected {
        /// The property.
        key: String,
        /// librdkafka's reason, its value taken out.
        reason: String,
    },
    /// An `-X` key the runtime sets itself.
    #[error("-X {key} is refused: {why}")]
    Owned {
        /// The property.
        key: &'static str,
        /// What the runtime does with it and what to use instead.
        why: &'static str,
    },
    /// A drain deadline the group would not wait for.
    #[error(
        "--drain-timeout {drain:?} must be below the consumer's {key} ({limit}): a drain that long at a revocation \
         gets this member thrown out of its group; lower --drain-timeout or raise -X {key}"
    )]
    DrainTooLong {
        /// The deadline.
        drain: Duration,
        /// `session.timeout.ms` or `max.poll.interval.ms`.
        key: &'static str,
        /// The limit as shown: the default's value, or "as set" (a value set by -X is not shown).
        limit: String,
    },
}

/// `-X` keys every consuming service owns, and why.
const OWNED: &[(&str, &str)] = &[
    (
        "enable.auto.offset.store",
        "the runtime stores an input's offset only after its outputs are acknowledged (at-least-once); \
         librdkafka storing it at read time would commit inputs whose outputs are not written yet",
    ),
    (
        "enable.auto.commit",
        "the runtime decides how offsets commit (stored ones every second, the counter's after each checkpoint, \
         exactly-once's inside transactions)",
    ),
    ("group.id", "use --group-id / GROUP_ID"),
    ("group.instance.id", "use --group-instance-id / GROUP_INSTANCE_ID (one per instance)"),
];

/// `-X` keys the exactly-once mode owns, and why.
const OWNED_EXACTLY_ONCE: &[(&str, &str)] = &[
    ("isolation.level", "exactly-once reads read_committed, always"),
    ("enable.idempotence", "exactly-once's transactional producer is idempotent, always"),
    ("transactional.id", "use --transactional-id / TRANSACTIONAL_ID (one per instance, stable across restarts)"),
];

impl KafkaArgs {
    /// Every `-X` entry is `key=value` and accepted by librdkafka (its value never shown).
    pub fn check(&self) -> Result<(), SettingError> {
        if let Some(position) = self.properties.iter().flat_map(|l| l.malformed.iter()).next() {
            return Err(SettingError::NotKeyValue { position: *position });
        }
        for (key, value) in self.properties() {
            let mut one = ClientConfig::new();
            one.set(key, value);
            if let Err(e) = one.create_native_config() {
                return Err(SettingError::Rejected { key: key.to_owned(), reason: redacted(&e) });
            }
        }
        Ok(())
    }
}

/// Refuses what breaks a consuming service's guarantee: bad or owned `-X` keys, `acks` weaker
/// than all, and a drain deadline not below the session timeout and the poll interval.
pub(crate) fn check_service(
    kafka: &KafkaArgs,
    guarantee: Guarantee,
    drain: Duration,
    session_timeout: Duration,
) -> Result<(), SettingError> {
    kafka.check()?;
    let exactly_once = if guarantee == Guarantee::ExactlyOnce { OWNED_EXACTLY_ONCE } else { &[] };
    for (key, why) in OWNED.iter().chain(exactly_once) {
        if kafka.property(key).is_some() {
            return Err(SettingError::Owned { key, why });
        }
    }
    if kafka.property("acks").is_some_and(|v| !matches!(v.trim(), "all" | "-1")) {
        return Err(SettingError::Owned {
            key: "acks",
            why: "an output counts as delivered only once every in-sync replica has it (acks=all): \
                  weaker acknowledgements lose acknowledged records when a leader fails",
        });
    }
    for (key, default) in [("session.timeout.ms", session_timeout), ("max.poll.interval.ms", Duration::from_secs(300))]
    {
        // librdkafka accepted the value (check above): an integer of milliseconds.
        let set = kafka.property(key).and_then(|v| v.trim().parse::<u64>().ok());
        let limit = set.map_or(default, Duration::from_millis);
        if drain >= limit {
            let limit = if set.is_some() { "as set by -X".to_owned() } else { format!("{limit:?} by default") };
            return Err(SettingError::DrainTooLong { drain, key, limit });
        }
    }
    Ok(())
}

/// librdkafka's error, without the value of a configuration property it quotes (a value may
/// be a password): a refused property is named by its key only.
pub fn redacted(error: &KafkaError) -> String {
    match error {
        KafkaError::ClientConfig(_, desc, key, value) if !value.is_empty() => {
            format!("librdkafka refused the value of `{key}`: {}", desc.replace(value.as_str(), "…"))
        }
        KafkaError::ClientConfig(_, desc, key, _) => format!("librdkafka refused `{key}`: {desc}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    fn kafka(args: &[&str]) -> KafkaArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap().kafka
    }

    fn refusal(args: &[&str], guarantee: Guarantee, drain: Duration) -> String {
        check_service(&kafka(args), guarantee, drain, SESSION).unwrap_err().to_string()
    }

    const DRAIN: Duration = Duration::from_secs(8);
    /// The session timeout of a dynamic member.
    const SESSION: Duration = Duration::from_secs(10);

    #[test]
    fn the_defaults_pass() {
        check_service(&kafka(&[]), Guarantee::AtLeastOnce, DRAIN, SESSION).unwrap();
        check_service(&kafka(&["-X", "linger.ms=5", "-X", "acks=all"]), Guarantee::ExactlyOnce, DRAIN, SESSION)
            .unwrap();
    }

    #[test]
    fn the_keys_the_runtime_owns_are_refused_by_name() {
        let err = refusal(&["-X", "enable.auto.offset.store=true"], Guarantee::AtLeastOnce, DRAIN);
        assert!(err.starts_with("-X enable.auto.offset.store is refused: "), "{err}");
        assert!(refusal(&["-X", "group.id=g"], Guarantee::AtLeastOnce, DRAIN).contains("--group-id"));
        let err = refusal(&["-X", "group.instance.id=a"], Guarantee::AtLeastOnce, DRAIN);
        assert!(err.contains("--group-instance-id"), "{err}");
        assert!(refusal(&["-X", "acks=1"], Guarantee::AtLeastOnce, DRAIN).starts_with("-X acks is refused"));
        // Only exactly-once owns these.
        check_service(&kafka(&["-X", "isolation.level=read_uncommitted"]), Guarantee::AtLeastOnce, DRAIN, SESSION)
            .unwrap();
        let err = refusal(&["-X", "isolation.level=read_uncommitted"], Guarantee::ExactlyOnce, DRAIN);
        assert!(err.starts_with("-X isolation.level is refused"), "{err}");
    }

    #[test]
    fn a_drain_the_group_would_not_wait_for_is_refused() {
        let err = refusal(&[], Guarantee::AtLeastOnce, Duration::from_secs(10));
        assert!(
            err.contains("--drain-timeout 10s must be below the consumer's session.timeout.ms (10s by default)"),
            "{err}"
        );
        let err = refusal(
            &["-X", "max.poll.interval.ms=20000", "-X", "session.timeout.ms=45000"],
            Guarantee::AtLeastOnce,
            Duration::from_secs(30),
        );
        assert!(err.contains("max.poll.interval.ms (as set by -X)"), "{err}");
        let long = Duration::from_secs(30);
        check_service(&kafka(&["-X", "session.timeout.ms=45000"]), Guarantee::AtLeastOnce, long, SESSION).unwrap();
        // A static member's session is 45 s unless set: a 30 s drain fits in it.
        check_service(&kafka(&[]), Guarantee::AtLeastOnce, long, Duration::from_secs(45)).unwrap();
    }

    #[test]
    fn a_refused_value_is_never_shown() {
        let err = kafka(&["-X", "sasl.password=hunter;2secret"]).check().unwrap_err().to_string();
        assert!(err.starts_with("entry 2 of an -X / KAFKA_PROPERTIES value is not key=value"), "{err}");
        assert!(!err.contains("2secret"), "{err}");
        let err = kafka(&["-X", "linger.ms=s3cr3t"]).check().unwrap_err().to_string();
        assert!(err.starts_with("-X linger.ms: librdkafka refused the value of `linger.ms`"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        let err = kafka(&["-X", "sasl.pasword=s3cr3t"]).check().unwrap_err().to_string();
        assert!(err.contains("sasl.pasword") && !err.contains("s3cr3t"), "{err}");
    }
}
