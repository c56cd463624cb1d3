//! Binding the API socket and answering its connections.
//!
//! Steps of [`serve`], in order: create the run dir; if the socket path exists, refuse
//! unless it is a socket nobody answers on (a controller that crashed), which is
//! removed; bind; restrict the mode to 0600; accept connections, each in a task of its
//! own that checks the peer's uid before reading anything. The socket is removed when
//! the [`ApiServer`] is dropped (the controller stops).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::admission::{Admission, Permit};
use super::{ApiError, http, routes};
use crate::daemon::Shared;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// API connections served at once (`events --follow` streams hold one each); a pool of
/// its own, apart from the metrics endpoint's.
const MAX_CONNECTIONS: usize = 256;

/// The running API; dropping it stops accepting and removes the socket.
#[derive(Debug)]
pub struct ApiServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove the API socket");
        }
    }
}

/// Binds the API socket at `path` and serves it in the background.
pub async fn serve(path: &Path, shared: Arc<Shared>) -> Result<ApiServer, ApiError> {
    let io = |operation: &'static str| {
        move |source| ApiError::Io {
            operation,
            path: path.to_owned(),
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create the directory of"))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ApiError::NotASocket {
                path: path.to_owned(),
            });
        }
        Ok(_) => match UnixStream::connect(path).await {
            Ok(_) => {
                return Err(ApiError::AlreadyRunning {
                    path: path.to_owned(),
                });
            }
            Err(_) => {
                tracing::info!(path = %path.display(), "removing the API socket a stopped controller left");
                std::fs::remove_file(path).map_err(io("remove the stale socket"))?;
            }
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(io("inspect")(source)),
    }
    let listener = UnixListener::bind(path).map_err(io("bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("restrict the mode of"))?;
    let admission = Admission::new("API", MAX_CONNECTIONS);
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match admission.admit() {
                    Some(permit) => {
                        tokio::spawn(connection(stream, shared.clone(), permit));
                    }
                    None => drop(stream),
                },
                Err(error) => {
                    tracing::warn!(%error, "cannot accept an API connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(ApiServer {
        path: path.to_owned(),
        task,
    })
}

/// One connection: one request, one answer, for root only; it holds its place in the
/// pool until it ends.
async fn connection(mut stream: UnixStream, shared: Arc<Shared>, permit: Permit) {
    let _permit = permit;
    let uid = match stream.peer_cred() {
        Ok(credentials) => Some(credentials.uid()),
        Err(error) => {
            tracing::warn!(%error, "cannot read an API client's credentials; refusing it");
            None
        }
    };
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, http::read_request(&mut stream)).await
    {
        Ok(Ok(request)) => request,
        Ok(Err(error)) => {
            let _ = http::send(&mut stream, &http::error(400, &error.to_string())).await;
            return;
        }
        Err(_) => return,
    };
    // The request is read first (bounded in size and time) so the refusal reaches a
    // client that is still sending, instead of a reset connection.
    if uid != Some(0) {
        tracing::warn!(uid, "refused an API client that is not root");
        let _ = http::send(
            &mut stream,
            &http::error(403, "the gitvisor controller's API is for root only"),
        )
        .await;
        return;
    }
    tracing::debug!(method = %request.method, path = %request.path, "API request");
    routes::answer(request, stream, shared).await;
}
