//! A small S3 object store over one bucket, with errors a person can act on.
//!
//! Credentials come from the aws-config default chain (environment, profile, then container or
//! instance metadata), so the same binary runs against AWS, MinIO and the local SeaweedFS.
//! Every error names the endpoint and the bucket/key and says what to do next; no error or log
//! line ever contains the secret key.
//!
//! Every call is bounded by `--s3-timeout` (retries included), and every error is classified
//! once, here: [`S3Error::is_transient`] (unreachable, stalled, 5xx, throttled: worth waiting
//! for) or not (refused credentials, a missing bucket, a request the store rejects: waiting
//! changes nothing, the operator must). Callers act on that, never on the variant list.

use std::future::Future;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use bytes::Bytes;

use crate::args::S3Args;

/// What went wrong talking to S3.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// No connection (refused, DNS, timeout): the server is not there.
    #[error(
        "cannot reach S3 at {endpoint} ({detail}); start the local stack with `scripts/stack.sh up` \
         or point --s3-endpoint / S3_ENDPOINT at a running S3"
    )]
    Unreachable { endpoint: String, detail: String },
    /// The credential chain found nothing (no env variables, profile or instance role).
    #[error(
        "no S3 credentials for {endpoint}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the local \
         stack's are in config/local.env) or an AWS profile ({detail})"
    )]
    NoCredentials { endpoint: String, detail: String },
    /// The bucket does not exist.
    #[error(
        "bucket `{bucket}` does not exist at {endpoint}; create it (`generator dims` does) or set --s3-bucket / S3_BUCKET"
    )]
    NoSuchBucket { endpoint: String, bucket: String },
    /// The object does not exist.
    #[error("s3://{bucket}/{key} does not exist at {endpoint}")]
    NoSuchKey { endpoint: String, bucket: String, key: String },
    /// The server refused the credentials or the request's signature.
    #[error(
        "S3 at {endpoint} refused access to bucket `{bucket}` ({code}); check AWS_ACCESS_KEY_ID / \
         AWS_SECRET_ACCESS_KEY (or the AWS profile) and the bucket policy"
    )]
    AccessDenied { endpoint: String, bucket: String, code: String },
    /// The call got no answer within `--s3-timeout` (a store that accepts connections and then
    /// stalls, an overloaded proxy): transient.
    #[error(
        "S3 {op} on s3://{bucket}/{key} at {endpoint} got no answer within {} (--s3-timeout / S3_TIMEOUT)",
        humantime::format_duration(*after)
    )]
    Stalled { op: &'static str, endpoint: String, bucket: String, key: String, after: Duration },
    /// Anything else, with the server's words; `transient` when the server said to try again
    /// (5xx, throttling, a request timeout) or the answer broke off.
    #[error("S3 {op} on s3://{bucket}/{key} at {endpoint} failed: {detail}")]
    Other { op: &'static str, endpoint: String, bucket: String, key: String, detail: String, transient: bool },
}

impl S3Error {
    /// Whether the same call may succeed later without anyone changing anything: S3 is
    /// unreachable or stalled, busy (5xx) or throttling. Everything else (refused credentials,
    /// a missing bucket, a rejected request) needs an operator; a missing key is neither, its
    /// meaning is the caller's.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Stalled { .. } | Self::Other { transient: true, .. })
    }
}

/// Error codes S3 (and MinIO, SeaweedFS) answer when it is busy rather than when the request
/// is wrong: retried like a 5xx.
const TRANSIENT_CODES: &[&str] =
    &["SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"];

/// One object as a LIST shows it: enough to tell whether it changed without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key in the bucket.
    pub key: String,
    /// The store's entity tag, quotes removed (changes whenever the bytes do); None when the
    /// store sends none.
    pub e_tag: Option<String>,
    /// Size in bytes (part of the fallback identity when there is no ETag).
    pub size: i64,
    /// Last-modified time as (seconds since the epoch, nanoseconds), when the store sends it
    /// (the fallback identity's other half).
    pub last_modified: Option<(i64, u32)>,
}

/// One bucket on one S3 endpoint.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    /// The SDK client (cheap to clone, shares its connection pool).
    client: Client,
    /// The bucket every call addresses.
    bucket: String,
    /// The endpoint as shown in errors.
    endpoint: String,
    /// Region, needed to create a bucket outside us-east-1.
    region: String,
    /// The longest one call may take, retries included (`--s3-timeout`).
    timeout: Duration,
}

impl ObjectStore {
    /// A store for `args.s3_bucket`, credentials from the default chain. Connect timeouts are
    /// short (3 s) and retries few, so an S3 that is down is reported in seconds; a call that
    /// gets no answer is abandoned after `--s3-timeout`.
    pub async fn connect(args: &S3Args) -> Self {
        Self::connect_bucket(args, &args.s3_bucket).await
    }

    /// Like [`ObjectStore::connect`] for another bucket on the same endpoint.
    pub async fn connect_bucket(args: &S3Args, bucket: &str) -> Self {
        let shared =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(args.s3_region.clone())).load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(args.path_style())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    // Three attempts fit in one --s3-timeout (and `bounded` holds the whole call,
                    // the body read included, to it).
                    .operation_attempt_timeout(args.s3_timeout / 3)
                    .operation_timeout(args.s3_timeout)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(3));
        if let Some(endpoint) = &args.s3_endpoint {
            config = config.endpoint_url(endpoint);
        }
        Self {
            client: Client::from_conf(config.build()),
            bucket: bucket.to_owned(),
            endpoint: args.endpoint_display(),
            region: args.s3_region.clone(),
            timeout: args.s3_timeout,
        }
    }

    /// `call` (one S3 operation on `key`, the body read included), abandoned as
    /// [`S3Error::Stalled`] after `--s3-timeout`: the SDK's own timeouts do not cover reading a
    /// body, and a stalled store must never hold a caller longer than that.
    async fn bounded<T>(
        &self,
        op: &'static str,
        key: &str,
        call: impl Future<Output = Result<T, S3Error>>,
    ) -> Result<T, S3Error> {
        tokio::time::timeout(self.timeout, call).await.unwrap_or_else(|_| {
            Err(S3Error::Stalled {
                op,
                endpoint: self.endpoint.clone(),
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                after: self.timeout,
            })
        })
    }

    /// The bucket this store addresses.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://bucket/key`, for messages.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }

    fn classify<E>(
        &self,
        op: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let detail = DisplayErrorContext(&err).to_string();
        if matches!(err, SdkError::DispatchFailure(_)) && detail.contains("credential") {
            return S3Error::NoCredentials { endpoint: self.endpoint.clone(), detail: short(&detail) };
        }
        if matches!(err, SdkError::TimeoutError(_)) {
            let (endpoint, bucket, key) = (self.endpoint.clone(), self.bucket.clone(), key.to_owned());
            return S3Error::Stalled { op, endpoint, bucket, key, after: self.timeout };
        }
        if matches!(err, SdkError::DispatchFailure(_)) {
            return S3Error::Unreachable { endpoint: self.endpoint.clone(), detail: short(&detail) };
        }
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_owned);
        let (endpoint, bucket) = (self.endpoint.clone(), self.bucket.clone());
        match (code.as_deref(), status) {
            (Some("NoSuchBucket"), _) => S3Error::NoSuchBucket { endpoint, bucket },
            (Some("NoSuchKey"), _) => S3Error::NoSuchKey { endpoint, bucket, key: key.to_owned() },
            // HEAD responses have no body: a bare 404 ("NotFound") on the bucket or the key.
            (None | Some("NotFound"), Some(404)) if key.is_empty() => S3Error::NoSuchBucket { endpoint, bucket },
            (None | Some("NotFound"), Some(404)) => S3Error::NoSuchKey { endpoint, bucket, key: key.to_owned() },
            (Some(c @ ("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch")), _) => {
                S3Error::AccessDenied { endpoint, bucket, code: c.to_owned() }
            }
            (None, Some(403)) => S3Error::AccessDenied { endpoint, bucket, code: "HTTP 403".into() },
            (code, status) => {
                let transient = matches!(err, SdkError::ResponseError(_))
                    || status.is_some_and(|s| s >= 500 || s == 429)
                    || code.is_some_and(|c| TRANSIENT_CODES.contains(&c));
                S3Error::Other { op, endpoint, bucket, key: key.to_owned(), detail: short(&detail), transient }
            }
        }
    }

    /// Checks that the bucket exists and the credentials open it.
    pub async fn check_bucket(&self) -> Result<(), S3Error> {
        let call = self.client.head_bucket().bucket(&self.bucket).send();
        self.bounded("HeadBucket", "", async { call.await.map(drop).map_err(|e| self.classify("HeadBucket", "", e)) })
            .await
    }

    /// Creates the bucket unless it exists already.
    pub async fn ensure_bucket(&self) -> Result<(), S3Error> {
        match self.check_bucket().await {
            Err(S3Error::NoSuchBucket { .. }) => {}
            other => return other,
        }
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        if self.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        self.bounded("CreateBucket", "", async {
            match req.send().await {
                Ok(_) => Ok(()),
                Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) => Ok(()),
                Err(e) => Err(self.classify("CreateBucket", "", e)),
            }
        })
        .await
    }

    /// Writes one object (a single PUT: readers see the old or the new bytes, never a mix).
    pub async fn put(&self, key: &str, body: impl Into<Bytes>) -> Result<(), S3Error> {
        let call = self.client.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(body.into())).send();
        self.bounded("PutObject", key, async { call.await.map(drop).map_err(|e| self.classify("PutObject", key, e)) })
            .await
    }

    /// Reads one object whole.
    pub async fn get(&self, key: &str) -> Result<Bytes, S3Error> {
        self.bounded("GetObject", key, async {
            let call = self.client.get_object().bucket(&self.bucket).key(key).send();
            let out = call.await.map_err(|e| self.classify("GetObject", key, e))?;
            out.body.collect().await.map(|b| b.into_bytes()).map_err(|e| S3Error::Other {
                op: "GetObject",
                endpoint: self.endpoint.clone(),
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                detail: format!("reading the body: {e}"),
                transient: true,
            })
        })
        .await
    }

    /// Every key under `prefix`, in the store's (lexicographic) order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        Ok(self.list_objects(prefix).await?.into_iter().map(|o| o.key).collect())
    }

    /// Every object under `prefix` with its ETag, size and last-modified time, in the store's
    /// (lexicographic) order: what a change check needs, from LIST alone (no GET).
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>, S3Error> {
        self.bounded("ListObjectsV2", prefix, async {
            let mut objects = Vec::new();
            let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
            while let Some(page) = pages.try_next().await.map_err(|e| self.classify("ListObjectsV2", prefix, e))? {
                objects.extend(page.contents().iter().filter_map(|o| {
                    Some(ObjectInfo {
                        key: o.key()?.to_owned(),
                        e_tag: o.e_tag().map(|t| t.trim_matches('"').to_owned()),
                        size: o.size().unwrap_or(0),
                        last_modified: o.last_modified().map(|t| (t.secs(), t.subsec_nanos())),
                    })
                }));
            }
            Ok(objects)
        })
        .await
    }

    /// Deletes one object (no error if it is already gone).
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        let call = self.client.delete_object().bucket(&self.bucket).key(key).send();
        self.bounded("DeleteObject", key, async {
            call.await.map(drop).map_err(|e| self.classify("DeleteObject", key, e))
        })
        .await
    }

    /// Deletes the bucket. SeaweedFS deletes a non-empty bucket with its objects; AWS and MinIO
    /// refuse (BucketNotEmpty).
    pub async fn delete_bucket(&self) -> Result<(), S3Error> {
        let call = self.client.delete_bucket().bucket(&self.bucket).send();
        self.bounded("DeleteBucket", "", async {
            call.await.map(drop).map_err(|e| self.classify("DeleteBucket", "", e))
        })
        .await
    }
}

/// The SDK's error context can run to several lines; keep the first, bounded.
fn short(detail: &str) -> String {
    let line = detail.lines().next().unwrap_or(detail);
    if line.len() > 300 { format!("{}…", &line[..line.floor_char_boundary(300)]) } else { line.to_owned() }
}

#[cfg(test)]
mod tests;
