//! A TCP proxy in front of a local server that a test can stall: what a store looks like when
//! it stops answering (a hung disk, a partitioned network) without going away.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards every connection on `127.0.0.1:<port>` to a target. While stalled it moves no byte
/// in either direction and serves no new connection (they are accepted and wait): requests
/// hang until their client's own timeout, as against a server that stopped answering.
#[derive(Debug)]
pub struct StallProxy {
    /// The port it listens on.
    pub port: u16,
    /// `true` while stalled; every forwarding task watches it.
    stalled: Arc<watch::Sender<bool>>,
    /// The accept loop, aborted on drop (its connections end with it).
    accept: tokio::task::JoinHandle<()>,
}

impl StallProxy {
    /// Starts forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let stalled = Arc::new(watch::Sender::new(false));
        let watch = stalled.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut gate = watch.subscribe();
                tokio::spawn(async move {
                    if wait_open(&mut gate).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = tokio::spawn(forward(client_read, server_write, gate.clone()));
                    forward(server_read, client_write, gate).await;
                    up.abort();
                });
            }
        });
        Self { port, stalled, accept }
    }

    /// A proxy in front of the local S3 (`S3_ENDPOINT`, else 127.0.0.1:8333).
    pub async fn s3() -> Self {
        let endpoint = crate::s3(crate::TEST_BUCKET).s3_endpoint.unwrap_or_default();
        let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
        Self::start(host.parse().expect("S3_ENDPOINT is http://<ip>:<port>")).await
    }

    /// `http://127.0.0.1:<port>`, for an `--s3-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops moving bytes.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Moves bytes again (what was held goes through).
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Waits while stalled; Err when the proxy is gone.
async fn wait_open(gate: &mut watch::Receiver<bool>) -> Result<(), watch::error::RecvError> {
    gate.wait_for(|stalled| !stalled).await.map(drop)
}

/// Copies `from` to `to`, holding each chunk while stalled.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if wait_open(&mut gate).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
