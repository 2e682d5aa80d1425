//! How S3's answers are classified, against a real HTTP server on loopback that answers every
//! request with one fixed S3 error (what AWS, MinIO or a proxy send when busy or when refusing).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// Serves `status` with an S3 error body of `code` to every request; returns its endpoint.
async fn answering(status: &'static str, code: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                // One request per connection is enough: the answer closes it.
                let _ = conn.read(&mut buf).await;
                let body = format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>");
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    endpoint
}

async fn store(endpoint: String, timeout: Duration) -> ObjectStore {
    let args = S3Args {
        s3_endpoint: Some(endpoint),
        s3_region: "us-east-1".into(),
        s3_bucket: "b".into(),
        dims_prefix: "p".into(),
        s3_path_style: Some(true),
        s3_timeout: timeout,
    };
    ObjectStore::connect(&args).await
}

#[tokio::test]
async fn busy_and_throttled_answers_are_transient_refusals_are_not() {
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        // The SDK needs some credentials to sign with; the suite's environment has them.
        eprintln!("skipped: no AWS_ACCESS_KEY_ID in the environment (scripts/test.sh sets it)");
        return;
    }
    let cases = [
        ("503 Service Unavailable", "SlowDown", true),
        ("500 Internal Server Error", "InternalError", true),
        ("400 Bad Request", "RequestTimeout", true),
        ("429 Too Many Requests", "Throttling", true),
        ("403 Forbidden", "AccessDenied", false),
        ("404 Not Found", "NoSuchBucket", false),
        ("400 Bad Request", "InvalidBucketName", false),
    ];
    for (status, code, transient) in cases {
        let s = store(answering(status, code).await, Duration::from_secs(20)).await;
        let err = s.get("k").await.unwrap_err();
        assert_eq!(err.is_transient(), transient, "{status} {code}: {err}");
        let line = err.to_string();
        assert!(!line.contains('\n'), "one line: {line}");
    }
}

#[tokio::test]
async fn a_store_that_accepts_and_never_answers_is_stalled_after_the_timeout() {
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        eprintln!("skipped: no AWS_ACCESS_KEY_ID in the environment (scripts/test.sh sets it)");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    // Accepts, reads, never answers.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let s = store(endpoint, Duration::from_millis(900)).await;
    let err = s.put("k", b"v".to_vec()).await.unwrap_err();
    assert!(matches!(err, S3Error::Stalled { op: "PutObject", .. }), "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("got no answer within 900ms (--s3-timeout"), "{err}");
}
