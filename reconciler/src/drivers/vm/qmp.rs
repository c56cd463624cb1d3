//! A minimal QMP client (QEMU Machine Protocol, JSON lines over the VM's unix socket).
//!
//! One short connection per command: greeting, `qmp_capabilities`, the command, its
//! answer. Asynchronous events QEMU sends in between (`{"event": …}`) are skipped. Every
//! read and write has a timeout, so a hung QEMU cannot hang a plan: observe reports the
//! guest's status as unknown instead.
//!
//! QEMU serves one QMP client at a time on a socket; a second connection waits until the
//! first closes. Connections are therefore kept short and never held across a wait.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::monitor::{Control, GuestStatus, Monitor, MonitorError};

/// How long one QMP exchange may take.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default)]
pub struct Qmp;

impl Qmp {
    /// Runs `command` with `arguments` and returns its `return` value.
    pub async fn execute(
        socket: &Path,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, MonitorError> {
        match tokio::time::timeout(QMP_TIMEOUT, exchange(socket, command, arguments)).await {
            Ok(result) => result,
            Err(_) => Err(MonitorError {
                message: format!(
                    "QMP {command}: no answer within {}s on {}",
                    QMP_TIMEOUT.as_secs(),
                    socket.display()
                ),
                transient: true,
            }),
        }
    }
}

async fn exchange(
    socket: &Path,
    command: &str,
    arguments: Option<Value>,
) -> Result<Value, MonitorError> {
    let broken = |what: &str, e: std::io::Error| MonitorError {
        message: format!("QMP {command}: {what} {}: {e}", socket.display()),
        transient: true,
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| broken("cannot connect to", e))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let greeting = next_message(&mut lines, command).await?;
    if greeting.get("QMP").is_none() {
        return Err(protocol(command, "the socket did not greet with QMP"));
    }
    send(&mut write, &json!({"execute": "qmp_capabilities"}), command).await?;
    answer(&mut lines, "qmp_capabilities").await?;
    let mut request = json!({"execute": command});
    if let Some(arguments) = arguments {
        request["arguments"] = arguments;
    }
    send(&mut write, &request, command).await?;
    match answer(&mut lines, command).await {
        // QEMU may close the socket before answering `quit`: it has quit.
        Err(error) if command == "quit" && error.message.ends_with("closed the connection") => {
            Ok(Value::Null)
        }
        other => other,
    }
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    message: &Value,
    command: &str,
) -> Result<(), MonitorError> {
    let mut line = message.to_string();
    line.push('\n');
    write
        .write_all(line.as_bytes())
        .await
        .map_err(|e| MonitorError {
            message: format!("QMP {command}: sending: {e}"),
            transient: true,
        })
}

type Lines = tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>;

/// The next message that is not an event.
async fn next_message(lines: &mut Lines, command: &str) -> Result<Value, MonitorError> {
    loop {
        let line = lines.next_line().await.map_err(|e| MonitorError {
            message: format!("QMP {command}: reading: {e}"),
            transient: true,
        })?;
        let Some(line) = line else {
            return Err(MonitorError {
                message: format!("QMP {command}: QEMU closed the connection"),
                transient: true,
            });
        };
        let message: Value = serde_json::from_str(&line)
            .map_err(|e| protocol(command, &format!("not JSON ({e}): {line}")))?;
        if message.get("event").is_none() {
            return Ok(message);
        }
    }
}

/// The answer to the command just sent: its `return`, or its `error` as a refusal.
async fn answer(lines: &mut Lines, command: &str) -> Result<Value, MonitorError> {
    let message = next_message(lines, command).await?;
    if let Some(value) = message.get("return") {
        return Ok(value.clone());
    }
    if let Some(error) = message.get("error") {
        let class = error.get("class").and_then(Value::as_str).unwrap_or("?");
        let desc = error.get("desc").and_then(Value::as_str).unwrap_or("");
        return Err(MonitorError {
            message: format!("QMP {command}: QEMU refused it: {class}: {desc}"),
            transient: false,
        });
    }
    Err(protocol(command, &format!("unexpected answer {message}")))
}

fn protocol(command: &str, what: &str) -> MonitorError {
    MonitorError {
        message: format!("QMP {command}: {what}"),
        transient: false,
    }
}

/// The status a `query-status` answer reports.
pub fn status_of(answer: &Value) -> Result<GuestStatus, MonitorError> {
    let status = answer
        .get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| protocol("query-status", &format!("no status in {answer}")))?;
    Ok(match status {
        "running" => GuestStatus::Running,
        // `prelaunch`: started with -S and never resumed.
        "paused" | "prelaunch" => GuestStatus::Paused,
        other => GuestStatus::Other(other.to_owned()),
    })
}

#[async_trait]
impl Monitor for Qmp {
    async fn status(&self, socket: &Path) -> Result<GuestStatus, MonitorError> {
        status_of(&Qmp::execute(socket, "query-status", None).await?)
    }

    async fn control(&self, socket: &Path, command: Control) -> Result<(), MonitorError> {
        let name = match command {
            Control::Powerdown => "system_powerdown",
            Control::Pause => "stop",
            Control::Resume => "cont",
            Control::Quit => "quit",
        };
        Qmp::execute(socket, name, None).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixListener;

    use super::*;

    /// A QMP server that greets, accepts capabilities, sends an event, then answers
    /// `answer` to the command, recording what it was asked.
    async fn serve_once(listener: UnixListener, answer: Value) -> Vec<Value> {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut asked = Vec::new();
        write
            .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
            .await
            .unwrap();
        for reply in [json!({"return": {}}), answer] {
            let line = lines.next_line().await.unwrap().unwrap();
            asked.push(serde_json::from_str::<Value>(&line).unwrap());
            write
                .write_all(b"{\"event\": \"RTC_CHANGE\", \"data\": {}}\n")
                .await
                .unwrap();
            write
                .write_all(format!("{reply}\n").as_bytes())
                .await
                .unwrap();
        }
        asked
    }

    #[tokio::test]
    async fn a_status_query_skips_events_and_reads_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(serve_once(
            listener,
            json!({"return": {"status": "paused", "running": false}}),
        ));
        assert_eq!(Qmp.status(&socket).await.unwrap(), GuestStatus::Paused);
        let asked = server.await.unwrap();
        assert_eq!(asked[0], json!({"execute": "qmp_capabilities"}));
        assert_eq!(asked[1], json!({"execute": "query-status"}));
    }

    #[test]
    fn a_guest_started_with_dash_s_is_paused() {
        for (status, expected) in [
            ("running", GuestStatus::Running),
            ("paused", GuestStatus::Paused),
            ("prelaunch", GuestStatus::Paused),
            ("shutdown", GuestStatus::Other("shutdown".into())),
        ] {
            assert_eq!(status_of(&json!({"status": status})).unwrap(), expected);
        }
        assert!(status_of(&json!({})).is_err());
    }

    #[tokio::test]
    async fn a_refusal_is_not_transient_and_a_missing_socket_is() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(serve_once(
            listener,
            json!({"error": {"class": "GenericError", "desc": "no"}}),
        ));
        let error = Qmp.control(&socket, Control::Resume).await.unwrap_err();
        assert!(!error.transient);
        assert!(
            error
                .message
                .contains("QMP cont: QEMU refused it: GenericError: no")
        );
        server.await.unwrap();
        let gone = Qmp.status(&dir.path().join("none.sock")).await.unwrap_err();
        assert!(gone.transient, "{gone}");
    }
}
