//! The metrics endpoint: `GET /metrics` on a TCP address, opt-in (`--metrics-listen`).
//! Read-only and without secrets, so it needs no credentials; it listens on loopback
//! unless the address says otherwise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::http;
use crate::daemon::Shared;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `address` and serves metrics in the background; returns the bound address.
pub async fn serve_metrics(
    address: SocketAddr,
    shared: Arc<Shared>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, shared.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(bound)
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let request = match tokio::time::timeout(
        Duration::from_secs(10),
        http::read_request(&mut stream),
    )
    .await
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
