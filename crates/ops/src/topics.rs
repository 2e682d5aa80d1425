//! `ops topics create | list | describe`.

use pipeline_kafka::args::KafkaArgs;
use pipeline_kafka::client::{self, KafkaSetupError};
use rdkafka::metadata::Metadata;

use crate::cli::{CreateArgs, DescribeArgs, ListArgs, TopicsCommand};

/// Runs one `topics` subcommand.
pub async fn topics(command: TopicsCommand) -> anyhow::Result<()> {
    match command {
        TopicsCommand::Create(args) => create(args).await,
        TopicsCommand::List(args) => list(args).await,
        TopicsCommand::Describe(args) => describe(args).await,
    }
}

/// The cluster's metadata for `topic`, or an error that says how to create it.
pub async fn must_exist(args: &KafkaArgs, topic: &str) -> anyhow::Result<Metadata> {
    match client::check_cluster(args, Some(topic)).await {
        Err(e @ KafkaSetupError::NoSuchTopic { .. }) => Err(anyhow::anyhow!("{e}, or `ops topics create {topic}`")),
        other => Ok(other?),
    }
}

/// Creates the topics that do not exist yet; reports the others as they are.
async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let metadata = client::check_cluster(&args.kafka, None).await?;
    let existing = |name: &str| {
        metadata.topics().iter().find(|t| t.name() == name && t.error().is_none()).map(|t| t.partitions().len())
    };
    let mut new: Vec<&str> = Vec::new();
    for name in &args.names {
        match existing(name) {
            Some(partitions) => println!("exists  {name} partitions={partitions} (left as it is)"),
            None if !new.contains(&name.as_str()) => new.push(name),
            None => {}
        }
    }
    if new.is_empty() {
        return Ok(());
    }
    client::create_topics(&args.kafka, &new, args.partitions, args.replication).await?;
    for name in new {
        println!("created {name} partitions={} replication={}", args.partitions, args.replication);
    }
    Ok(())
}

/// One line per topic: name and partition count, sorted by name.
async fn list(args: ListArgs) -> anyhow::Result<()> {
    let metadata = client::check_cluster(&args.kafka, None).await?;
    let mut rows: Vec<(&str, usize)> = metadata
        .topics()
        .iter()
        .filter(|t| args.all || !t.name().starts_with("__"))
        .map(|t| (t.name(), t.partitions().len()))
        .collect();
    rows.sort_unstable();
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0).max("TOPIC".len());
    println!("{:width$}  PARTITIONS", "TOPIC");
    for (name, partitions) in rows {
        println!("{name:width$}  {partitions}");
    }
    Ok(())
}

/// Each topic's partitions: leader, replicas, in-sync replicas and low/high watermarks.
async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let topics = client::describe_topics(&args.kafka, &names).await?;
    for (i, topic) in topics.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let records: i64 = topic.partitions.iter().map(|p| p.high - p.low).sum();
        println!("topic {} partitions={} records={records}", topic.name, topic.partitions.len());
        println!("{:>9}  {:>6}  {:>8}  {:>8}  {:>10}  {:>10}", "PARTITION", "LEADER", "REPLICAS", "ISR", "LOW", "HIGH");
        let ids = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        for p in &topic.partitions {
            println!(
                "{:>9}  {:>6}  {:>8}  {:>8}  {:>10}  {:>10}",
                p.id,
                p.leader,
                ids(&p.replicas),
                ids(&p.isr),
                p.low,
                p.high
            );
        }
    }
    Ok(())
}
