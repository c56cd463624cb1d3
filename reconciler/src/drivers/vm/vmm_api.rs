//! The [`Monitor`] of `hypervisor: builtin`: a client of gitvisor-vmm's control API (one
//! JSON object per line on the VM's `api.sock`, `docs/vmm.md`).
//!
//! One short connection per command, every exchange under a timeout, so a hung VMM
//! cannot hang a plan: observe reports the guest's status as unknown instead.
//!
//! The lifecycle's commands map onto the API like this:
//! - status → `status`: `running` is [`GuestStatus::Running`]; `shutting-down` and
//!   `stopping` are reported as they are named;
//! - [`Control::Powerdown`] → `shutdown` (the VMM presses its ACPI power button, a GED;
//!   a guest that acts on it powers off and the VMM exits);
//! - [`Control::Quit`] → `stop` (the process ends at once; the VMM may close the socket
//!   before its answer arrives, which counts as done);
//! - [`Control::Pause`] and [`Control::Resume`] are refused: gitvisor-vmm cannot pause a
//!   guest (the validator rejects `state: Paused` for this hypervisor, so only a bug gets
//!   here).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::monitor::{Control, GuestStatus, Monitor, MonitorError};

/// How long one exchange with the VMM may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

/// A request line, as gitvisor-vmm's `control::Request` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum ApiRequest {
    Status,
    Shutdown,
    Stop,
}

impl ApiRequest {
    fn name(self) -> &'static str {
        match self {
            ApiRequest::Status => "status",
            ApiRequest::Shutdown => "shutdown",
            ApiRequest::Stop => "stop",
        }
    }
}

/// The part of an answer line the driver reads (unknown fields are ignored: the VMM's
/// status carries more).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiResponse {
    pub ok: bool,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct VmmApi;

impl VmmApi {
    /// Sends `request` over `socket` and reads its answer.
    pub async fn call(socket: &Path, request: ApiRequest) -> Result<ApiResponse, MonitorError> {
        match tokio::time::timeout(API_TIMEOUT, exchange(socket, request)).await {
            Ok(result) => result,
            Err(_) => Err(MonitorError {
                message: format!(
                    "gitvisor-vmm {}: no answer within {}s on {}",
                    request.name(),
                    API_TIMEOUT.as_secs(),
                    socket.display()
                ),
                transient: true,
            }),
        }
    }
}

async fn exchange(socket: &Path, request: ApiRequest) -> Result<ApiResponse, MonitorError> {
    let command = request.name();
    let broken = |what: &str, e: std::io::Error| MonitorError {
        message: format!("gitvisor-vmm {command}: {what} {}: {e}", socket.display()),
        transient: true,
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| broken("cannot connect to", e))?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(&request).map_err(|e| MonitorError {
        message: format!("gitvisor-vmm {command}: encoding the request: {e}"),
        transient: false,
    })?;
    line.push('\n');
    write
        .write_all(line.as_bytes())
        .await
        .map_err(|e| broken("sending to", e))?;
    let answer = BufReader::new(read)
        .lines()
        .next_line()
        .await
        .map_err(|e| broken("reading from", e))?;
    let Some(answer) = answer else {
        // `stop` may end the process before the answer is written: it has stopped.
        if request == ApiRequest::Stop {
            return Ok(ApiResponse {
                ok: true,
                state: Some("stopping".into()),
                error: None,
            });
        }
        return Err(MonitorError {
            message: format!("gitvisor-vmm {command}: the VMM closed the connection"),
            transient: true,
        });
    };
    let response: ApiResponse = serde_json::from_str(&answer).map_err(|e| MonitorError {
        message: format!("gitvisor-vmm {command}: not an answer ({e}): {answer}"),
        transient: false,
    })?;
    if !response.ok {
        return Err(MonitorError {
            message: format!(
                "gitvisor-vmm {command}: the VMM refused it: {}",
                response.error.as_deref().unwrap_or("(no reason given)")
            ),
            transient: false,
        });
    }
    Ok(response)
}

/// The guest status an answer's `state` means.
pub fn guest_status(state: Option<&str>) -> GuestStatus {
    match state {
        Some("running") => GuestStatus::Running,
        Some(other) => GuestStatus::Other(other.to_owned()),
        None => GuestStatus::Other("unknown".to_owned()),
    }
}

#[async_trait]
impl Monitor for VmmApi {
    async fn status(&self, socket: &Path) -> Result<GuestStatus, MonitorError> {
        let response = VmmApi::call(socket, ApiRequest::Status).await?;
        Ok(guest_status(response.state.as_deref()))
    }

    async fn control(&self, socket: &Path, command: Control) -> Result<(), MonitorError> {
        let request = match command {
            Control::Powerdown => ApiRequest::Shutdown,
            Control::Quit => ApiRequest::Stop,
            Control::Pause | Control::Resume => {
                return Err(MonitorError {
                    message: format!(
                        "gitvisor-vmm cannot {command} a guest; hypervisor: builtin supports state Running and Stopped"
                    ),
                    transient: false,
                });
            }
        };
        VmmApi::call(socket, request).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// What gitvisor-vmm's own parser reads must be what this client sends, and what it
    /// answers must be what this client reads.
    #[test]
    fn requests_and_answers_are_the_vmms_own() {
        for (request, vmm) in [
            (ApiRequest::Status, gitvisor_vmm::control::Request::Status),
            (
                ApiRequest::Shutdown,
                gitvisor_vmm::control::Request::Shutdown,
            ),
            (ApiRequest::Stop, gitvisor_vmm::control::Request::Stop),
        ] {
            let line = serde_json::to_string(&request).unwrap();
            assert_eq!(gitvisor_vmm::control::parse(&line), Ok(vmm), "{line}");
        }
        let answer =
            gitvisor_vmm::control::Response::state(gitvisor_vmm::control::State::ShuttingDown)
                .to_line();
        let read: ApiResponse = serde_json::from_str(&answer).unwrap();
        assert_eq!(
            guest_status(read.state.as_deref()),
            GuestStatus::Other("shutting-down".into())
        );
        let running =
            gitvisor_vmm::control::Response::state(gitvisor_vmm::control::State::Running).to_line();
        let read: ApiResponse = serde_json::from_str(&running).unwrap();
        assert_eq!(guest_status(read.state.as_deref()), GuestStatus::Running);
        let refused = gitvisor_vmm::control::Response::error("no".into()).to_line();
        let read: ApiResponse = serde_json::from_str(&refused).unwrap();
        assert!(!read.ok);
    }

    /// A socket that answers each line with `answer` (or closes without one).
    async fn serve(socket: &Path, answer: Option<&'static str>) -> tokio::task::JoinHandle<String> {
        let listener = UnixListener::bind(socket).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let line = BufReader::new(read)
                .lines()
                .next_line()
                .await
                .unwrap()
                .unwrap();
            if let Some(answer) = answer {
                write.write_all(answer.as_bytes()).await.unwrap();
            }
            line
        })
    }

    #[tokio::test]
    async fn status_powerdown_and_stop_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let server = serve(
            &socket,
            Some("{\"ok\":true,\"state\":\"running\",\"status\":{\"pid\":1}}\n"),
        )
        .await;
        assert_eq!(VmmApi.status(&socket).await, Ok(GuestStatus::Running));
        assert_eq!(server.await.unwrap(), r#"{"command":"status"}"#);

        std::fs::remove_file(&socket).unwrap();
        let server = serve(&socket, Some("{\"ok\":true,\"state\":\"shutting-down\"}\n")).await;
        VmmApi
            .control(&socket, Control::Powerdown)
            .await
            .expect("shutdown answered");
        assert_eq!(server.await.unwrap(), r#"{"command":"shutdown"}"#);

        std::fs::remove_file(&socket).unwrap();
        let server = serve(&socket, None).await;
        VmmApi
            .control(&socket, Control::Quit)
            .await
            .expect("a VMM that ends before answering stop has stopped");
        assert_eq!(server.await.unwrap(), r#"{"command":"stop"}"#);

        std::fs::remove_file(&socket).unwrap();
        let server = serve(&socket, Some("{\"ok\":false,\"error\":\"busy\"}\n")).await;
        let refused = VmmApi.status(&socket).await.unwrap_err();
        assert!(
            refused.message.contains("busy") && !refused.transient,
            "{refused:?}"
        );
        server.await.unwrap();

        let gone = VmmApi
            .status(&dir.path().join("none.sock"))
            .await
            .unwrap_err();
        assert!(
            gone.transient && gone.message.contains("cannot connect"),
            "{gone:?}"
        );
        let pause = VmmApi.control(&socket, Control::Pause).await.unwrap_err();
        assert!(pause.message.contains("cannot pause"), "{pause:?}");
    }
}
