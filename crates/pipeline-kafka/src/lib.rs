//! The Kafka side of the pipeline's services: configuration (`args`), clients with the
//! project's defaults and start-up checks (`client`), the consume → transform → produce loops
//! with their delivery guarantees (`runtime`), the settings refused at start (`setting_guard`),
//! metrics and health endpoints (`observe`) with the loop's heartbeat behind `/healthz`
//! (`liveness`) and the per-partition gauges (`partition_health`), log
//! set-up (`telemetry`) and signal-driven shutdown (`shutdown`).
//!
//! No S3 and no Parquet here: those are `pipeline-s3`'s, linked by the services that read S3.

pub mod args;
pub mod client;
pub mod liveness;
pub mod observe;
pub mod partition_health;
pub mod runtime;
pub mod setting_guard;
pub mod shutdown;
pub mod telemetry;
