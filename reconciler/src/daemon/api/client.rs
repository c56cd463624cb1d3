//! The client side, for `gitvisor status`, `events` and `sync`: whether a controller
//! answers on the run dir's socket, and one request per connection.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::http;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the controller's API at {path} is for root only (permission denied); run this as root"
    )]
    Denied { path: PathBuf },

    #[error("the controller at {path} refused the request ({status}): {message}")]
    Refused {
        path: PathBuf,
        status: u16,
        message: String,
    },

    #[error("cannot talk to the controller at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the controller at {path} sent something that is not an HTTP response")]
    Garbled { path: PathBuf },
}

/// A controller's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    path: PathBuf,
}

/// Why [`ApiClient::stream`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The controller ended the body: all was sent, or it stopped.
    Closed,
    /// The caller's `line` asked to stop.
    Stopped,
}

impl ApiClient {
    /// The controller using `run_dir`, if one answers there; `None` when no controller
    /// runs (no socket, or a socket nobody listens on).
    pub async fn find(run_dir: &Path) -> Result<Option<ApiClient>, ClientError> {
        let client = ApiClient {
            path: super::socket_path(run_dir),
        };
        match UnixStream::connect(&client.path).await {
            Ok(_) => Ok(Some(client)),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(client.io(error)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `METHOD target`, the whole body back; a status other than 2xx is an error.
    pub async fn request(&self, method: &str, target: &str) -> Result<String, ClientError> {
        let mut reader = self.send(method, target).await?;
        let head = self.head(&mut reader).await?;
        let mut body = Vec::new();
        match head.content_length {
            Some(length) => {
                body.resize(length, 0);
                reader.read_exact(&mut body).await.map_err(|e| self.io(e))?;
            }
            None => {
                reader
                    .read_to_end(&mut body)
                    .await
                    .map_err(|e| self.io(e))?;
            }
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        self.check(head.status, &body)?;
        Ok(body)
    }

    /// `GET target`, calling `line` for each line of the body as it arrives, until the
    /// controller closes the stream ([`StreamEnd::Closed`]) or `line` returns `false`
    /// ([`StreamEnd::Stopped`]).
    pub async fn stream(
        &self,
        target: &str,
        mut line: impl FnMut(&str) -> bool,
    ) -> Result<StreamEnd, ClientError> {
        let mut reader = self.send("GET", target).await?;
        let head = self.head(&mut reader).await?;
        if !(200..300).contains(&head.status) {
            let mut body = String::new();
            let _ = reader.read_to_string(&mut body).await;
            self.check(head.status, &body)?;
        }
        let mut text = String::new();
        loop {
            text.clear();
            let n = reader.read_line(&mut text).await.map_err(|e| self.io(e))?;
            if n == 0 {
                return Ok(StreamEnd::Closed);
            }
            if !line(text.trim_end_matches('\n')) {
                return Ok(StreamEnd::Stopped);
            }
        }
    }

    async fn send(&self, method: &str, target: &str) -> Result<BufReader<UnixStream>, ClientError> {
        let mut stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| self.io(e))?;
        let request =
            format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| self.io(e))?;
        Ok(BufReader::new(stream))
    }

    async fn head(
        &self,
        reader: &mut BufReader<UnixStream>,
    ) -> Result<http::ResponseHead, ClientError> {
        let mut head = String::new();
        loop {
            let before = head.len();
            let n = reader.read_line(&mut head).await.map_err(|e| self.io(e))?;
            if n == 0 || head.len() > http::MAX_HEAD {
                return Err(ClientError::Garbled {
                    path: self.path.clone(),
                });
            }
            if head[before..].trim_end().is_empty() {
                break;
            }
        }
        http::parse_response_head(head.trim_end()).ok_or_else(|| ClientError::Garbled {
            path: self.path.clone(),
        })
    }

    fn check(&self, status: u16, body: &str) -> Result<(), ClientError> {
        if (200..300).contains(&status) {
            return Ok(());
        }
        if status == 403 {
            return Err(ClientError::Denied {
                path: self.path.clone(),
            });
        }
        let message = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.trim().to_owned());
        Err(ClientError::Refused {
            path: self.path.clone(),
            status,
            message,
        })
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            return ClientError::Denied {
                path: self.path.clone(),
            };
        }
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }
}
