//! The pipeline's object-store side: an S3 client whose errors name the endpoint, bucket, key
//! and next step (`store`), its flags (`args`), and the dimension tables as Spark-style
//! Parquet directories (`dims`) and their versions: a LIST-only change check, a
//! version digest (`dims_watch`); the operator's rules table beside them (`rules_store`); and
//! the reload state machine both share (`version_watch`).

pub mod args;
pub mod dims;
pub mod dims_watch;
pub mod rules_store;
pub mod store;
pub mod version_watch;

pub use args::S3Args;
pub use store::{ObjectStore, S3Error};
