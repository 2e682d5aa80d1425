//! The group consumer a loop reads from: made from the finished settings, its context wired to
//! the loop's rebalance state and to what a revocation must finish first, and subscribed.

use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;

use super::error::RuntimeError;
use super::rebalance::{LoopConsumer, Rebalancer, RevokeWork, RuntimeContext};
use super::settings::{OffsetCommits, RuntimeConfig};
use crate::client::KafkaSetupError;

/// The group consumer of `config.input_topic`, subscribed. `stopping` is the loop's: once it is
/// cancelled, a revocation (the close's own) waits for nothing.
pub(super) fn subscribe(
    config: &RuntimeConfig,
    rebalance: &Rebalancer,
    stopping: &CancellationToken,
    revoke: RevokeWork,
) -> Result<LoopConsumer, RuntimeError> {
    let transactional = matches!(revoke, RevokeWork::CommitTransaction(_));
    let context = RuntimeContext {
        service: config.service.clone(),
        commit: config.commits == OffsetCommits::Acknowledged && !transactional,
        epoch: rebalance.epoch.clone(),
        revoked: rebalance.revoked.clone(),
        assignment: rebalance.assignment.clone(),
        assigned: rebalance.assigned.clone(),
        readiness: config.readiness.clone(),
        revoke,
        drain_timeout: config.drain_timeout,
        input_topic: config.input_topic.clone(),
        cooperative: config.clients.cooperative,
        applied: rebalance.applied.clone(),
        stopping: stopping.clone(),
    };
    let consumer: LoopConsumer =
        config.clients.consumer.create_with_context(context).map_err(KafkaSetupError::Config)?;
    consumer
        .subscribe(&[&config.input_topic])
        .map_err(|source| RuntimeError::Subscribe { topic: config.input_topic.clone(), source })?;
    tracing::info!(
        service = %config.service, input = %config.input_topic, group = %config.group_id,
        commits = ?config.commits, guarantee = ?config.guarantee, "consuming"
    );
    Ok(consumer)
}
