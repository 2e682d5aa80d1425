//! Where the object store is: the S3 flags every service that touches S3 shares.
//!
//! Each flag has an environment variable, so flags in a terminal and env files in compose
//! configure the same binary.

use clap::Args;

/// Where the object store is and where the dimension tables live in it.
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3 endpoint URL (MinIO, SeaweedFS…); leave unset for AWS itself.
    #[arg(long, env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Region of the bucket (any value for MinIO/SeaweedFS).
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// Bucket holding the dimension tables.
    #[arg(long, env = "S3_BUCKET", default_value = "spark")]
    pub s3_bucket: String,

    /// Key prefix of the dimension tables; each table is a directory of Parquet files below it.
    #[arg(long, env = "DIMS_PREFIX", default_value = "data/dims")]
    pub dims_prefix: String,

    /// Path-style addressing (http://host/bucket/key). Defaults to on when --s3-endpoint is
    /// set (MinIO/SeaweedFS need it) and off for AWS.
    #[arg(long, env = "S3_FORCE_PATH_STYLE")]
    pub s3_path_style: Option<bool>,

    /// How long one S3 call may take in all, retries included, before it counts as a stall (a
    /// transient error: retried, readiness false). Bounds every call, so a store that accepts a
    /// connection and never answers cannot hold a service forever.
    #[arg(long, env = "S3_TIMEOUT", default_value = "30s", value_parser = nonzero_duration)]
    pub s3_timeout: std::time::Duration,
}

/// A duration flag's value that must be longer than zero (a zero timeout fails every call).
fn nonzero_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() { Err("must be longer than zero".to_owned()) } else { Ok(d) }
}

impl S3Args {
    /// Whether to address buckets by path.
    pub fn path_style(&self) -> bool {
        self.s3_path_style.unwrap_or(self.s3_endpoint.is_some())
    }

    /// The endpoint as shown in messages.
    pub fn endpoint_display(&self) -> String {
        self.s3_endpoint.clone().unwrap_or_else(|| format!("AWS S3 ({})", self.s3_region))
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
        s3: S3Args,
    }

    #[test]
    fn path_style_follows_the_endpoint_unless_set() {
        // Built by hand: the test environment may export S3_ENDPOINT.
        let aws = S3Args {
            s3_endpoint: None,
            s3_region: "eu-west-1".into(),
            s3_bucket: "b".into(),
            dims_prefix: "p".into(),
            s3_path_style: None,
            s3_timeout: std::time::Duration::from_secs(30),
        };
        assert!(!aws.path_style());
        assert_eq!(aws.endpoint_display(), "AWS S3 (eu-west-1)");
        let local = Cli::try_parse_from(["x", "--s3-endpoint", "http://127.0.0.1:8333"]).unwrap();
        assert!(local.s3.path_style());
        let forced = Cli::try_parse_from(["x", "--s3-endpoint", "http://h", "--s3-path-style", "false"]).unwrap();
        assert!(!forced.s3.path_style());
        assert!(Cli::try_parse_from(["x", "--s3-timeout", "0s"]).is_err(), "a zero timeout fails every call");
    }
}
