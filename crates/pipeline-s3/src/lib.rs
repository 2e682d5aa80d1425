//! The pipeline's object-store side: an S3 client whose errors name the endpoint, bucket, key
//! and next step (`store`), its flags (`args`), and the dimension tables as Spark-style
//! Parquet directories (`dims`).

pub mod args;
pub mod dims;
pub mod store;

pub use args::S3Args;
pub use store::{ObjectStore, S3Error};
