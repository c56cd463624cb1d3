//! What each API request gets (the table in [`super`]).

use std::sync::Arc;

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::broadcast::error::RecvError;

use super::http::{self, Request};
use super::metrics::CONTENT_TYPE;
use crate::daemon::Shared;

/// How many events `GET /v1/events` returns without `limit`.
const DEFAULT_EVENTS: usize = 100;

pub async fn answer(request: Request, mut stream: UnixStream, shared: Arc<Shared>) {
    let json = |value: serde_json::Value| {
        http::response(
            200,
            "application/json",
            (value.to_string() + "\n").as_bytes(),
        )
    };
    let answer = match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/v1/status") => json(json!(shared.status())),
        ("GET", "/v1/revision") => {
            let status = shared.status();
            json(json!({
                "source": status.source,
                "reference": status.reference,
                "applied": status.applied,
                "rejected": status.rejected,
                "sourceError": status.source_error,
            }))
        }
        ("GET", "/v1/events") => {
            let limit = match request.param("limit").map(str::parse::<usize>) {
                None => DEFAULT_EVENTS,
                Some(Ok(limit)) => limit,
                Some(Err(_)) => {
                    let _ =
                        http::send(&mut stream, &http::error(400, "limit must be a number")).await;
                    return;
                }
            };
            events(stream, &shared, limit, request.flag("follow")).await;
            return;
        }
        ("POST", "/v1/sync") => {
            let reply = shared.triggers.request();
            if request
                .param("wait")
                .is_some_and(|v| matches!(v, "0" | "false" | "no"))
            {
                http::response(202, "application/json", b"{\"queued\":true}\n")
            } else {
                match reply.await {
                    Ok(outcome) => json(json!(outcome)),
                    Err(_) => http::error(503, "the controller stopped before the sync ran"),
                }
            }
        }
        ("GET", "/metrics") => {
            http::response(200, CONTENT_TYPE, shared.metrics.render().as_bytes())
        }
        (_, "/v1/status" | "/v1/revision" | "/v1/events" | "/v1/sync" | "/metrics") => {
            http::error(405, "method not allowed for this path")
        }
        _ => http::error(
            404,
            "no such path; see GET /v1/status, /v1/revision, /v1/events, POST /v1/sync",
        ),
    };
    let _ = http::send(&mut stream, &answer).await;
}

/// NDJSON events; with `follow`, every new one until the client goes away.
async fn events(stream: UnixStream, shared: &Shared, limit: usize, follow: bool) {
    let (history, mut receiver) = shared.events.follow(limit);
    let (mut reader, mut writer) = stream.into_split();
    let mut text = String::from_utf8_lossy(&http::stream_head("application/x-ndjson")).into_owned();
    for event in history {
        text.push_str(&json!(event).to_string());
        text.push('\n');
    }
    if http::send(&mut writer, text.as_bytes()).await.is_err() || !follow {
        return;
    }
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            event = receiver.recv() => {
                let line = match event {
                    Ok(event) => json!(event).to_string() + "\n",
                    Err(RecvError::Lagged(missed)) => json!({"missed": missed}).to_string() + "\n",
                    Err(RecvError::Closed) => return,
                };
                if http::send(&mut writer, line.as_bytes()).await.is_err() {
                    return;
                }
            }
            // The client closed its end (or sent something, which no route expects).
            _ = reader.read(&mut scratch) => return,
        }
    }
}
