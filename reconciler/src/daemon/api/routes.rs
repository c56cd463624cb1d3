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

/// The status snapshot, with the kinds' status tables under their keys (the DHCP leases
/// of the managed bridges are `dhcpLeases`, as `gitvisor status --output json` has them);
/// a table that cannot be read is `<key>Error` instead, saying why.
async fn status(shared: &Shared) -> serde_json::Value {
    let mut status = json!(shared.status());
    if let Some((run_dir, tables)) = &shared.status_tables {
        for table in tables {
            match (table.read)(run_dir).await {
                Ok(value) => status[table.key] = value,
                Err(error) => status[format!("{}Error", table.key)] = json!(error.to_string()),
            }
        }
    }
    status
}

pub async fn answer(request: Request, mut stream: UnixStream, shared: Arc<Shared>) {
    let json = |value: serde_json::Value| {
        http::response(
            200,
            "application/json",
            (value.to_string() + "\n").as_bytes(),
        )
    };
    let answer = match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/v1/status") => json(status(&shared).await),
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

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::daemon::ControllerStatus;
    use crate::drivers::{Rows, StatusTable};

    async fn get(shared: Arc<Shared>, path: &str) -> serde_json::Value {
        let (mut client, server) = UnixStream::pair().expect("a socket pair");
        let head = format!("GET {path} HTTP/1.1\r\n\r\n");
        let request = http::parse_head(head.as_bytes()).expect("a request");
        answer(request, server, shared).await;
        client.shutdown().await.expect("shut down");
        let mut response = String::new();
        client
            .read_to_string(&mut response)
            .await
            .expect("a response");
        let (_, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    }

    fn shared() -> Shared {
        Shared::new(ControllerStatus::starting(
            "/srv/manifests".into(),
            None,
            "host".into(),
            std::time::Duration::from_secs(60),
            None,
        ))
    }

    /// A table read from `<run dir>/table.json`, its rows the JSON's strings.
    const FILE_TABLE: StatusTable = StatusTable {
        key: "fileTable",
        title: "File table",
        read: |run_dir| {
            Box::pin(async move {
                let text = tokio::fs::read_to_string(run_dir.join("table.json")).await?;
                Ok(serde_json::from_str(&text)?)
            })
        },
        rows: |value| {
            let cells: Vec<String> = serde_json::from_value(value.clone())?;
            Ok(Rows {
                columns: &[("CELL", 0)],
                rows: cells.into_iter().map(|cell| vec![cell]).collect(),
            })
        },
    };

    #[tokio::test]
    async fn the_status_carries_each_table_or_why_it_could_not_be_read() {
        let run = tempfile::tempdir().expect("temp dir");
        std::fs::write(run.path().join("table.json"), r#"["a", "b"]"#).expect("table file");
        let with_table = shared().with_status_tables(run.path().to_path_buf(), vec![FILE_TABLE]);
        let status = get(Arc::new(with_table), "/v1/status").await;
        assert_eq!(status["host"], "host", "{status:#}");
        assert_eq!(status["fileTable"], json!(["a", "b"]), "{status:#}");
        assert!(status.get("fileTableError").is_none(), "{status:#}");

        // A table that cannot be read: why, under `<key>Error`, and the rest of the status.
        let empty = tempfile::tempdir().expect("temp dir");
        let unreadable = shared().with_status_tables(empty.path().to_path_buf(), vec![FILE_TABLE]);
        let status = get(Arc::new(unreadable), "/v1/status").await;
        assert_eq!(status["host"], "host", "{status:#}");
        assert!(status.get("fileTable").is_none(), "{status:#}");
        let error = status["fileTableError"].as_str().expect("an error");
        assert!(error.contains("No such file"), "{error}");
    }

    /// The controller carries this build's DHCP leases table, read below its run dir.
    #[tokio::test]
    async fn the_controller_carries_the_registered_tables() {
        let run = tempfile::tempdir().expect("temp dir");
        let registered = shared().with_status_tables(
            run.path().to_path_buf(),
            crate::drivers::status_tables().copied().collect(),
        );
        let status = get(Arc::new(registered), "/v1/status").await;
        assert_eq!(status["dhcpLeases"], json!({}), "{status:#}");
    }
}
