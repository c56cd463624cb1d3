//! The metrics endpoint: `GET /metrics` on a TCP address, opt-in (`--metrics-listen`).
//! Read-only and without secrets, so it needs no credentials; it listens on loopback
//! unless the address says otherwise.
//!
//! Being unauthenticated, it is bounded so that no client can take what the controller
//! needs (see [`super::admission`]): at most [`MAX_CONNECTIONS`] at once (more are closed
//! at once), a request head within [`REQUEST_TIMEOUT`] and [`http::MAX_HEAD`] bytes, and
//! a whole connection, answer included, within [`CONNECTION_TIMEOUT`]. A scraper sends
//! its few hundred bytes at once and reads the answer at once, so none of these bounds
//! touches Prometheus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::admission::{Admission, Permit};
use super::http;
use crate::daemon::Shared;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Metrics connections served at once; one scrape needs one.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may last, the answer included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `address` and serves metrics in the background; returns the bound address.
pub async fn serve_metrics(
    address: SocketAddr,
    shared: Arc<Shared>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let admission = Admission::new("metrics", MAX_CONNECTIONS);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match admission.admit() {
                    Some(permit) => {
                        tokio::spawn(connection(stream, shared.clone(), permit));
                    }
                    // Dropped: closed at once, its descriptor freed.
                    None => drop(stream),
                },
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(bound)
}

/// One connection, holding its place in the pool until it ends or times out.
async fn connection(stream: TcpStream, shared: Arc<Shared>, permit: Permit) {
    let _permit = permit;
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, shared)).await;
}

async fn answer(mut stream: TcpStream, shared: Arc<Shared>) {
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, http::read_request(&mut stream)).await
    {
        Ok(Ok(request)) => request,
        _ => return,
    };
    let answer = match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/metrics") => {
            http::response(200, CONTENT_TYPE, shared.metrics.render().as_bytes())
        }
        (_, "/metrics") => http::error(405, "only GET /metrics"),
        _ => http::error(404, "only /metrics is served here"),
    };
    let _ = http::send(&mut stream, &answer).await;
}
