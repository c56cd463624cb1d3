//! Just enough HTTP/1.1 for the local API and the metrics endpoint: one request per
//! connection (`Connection: close`), no request bodies, responses with a
//! `Content-Length` or, for a stream, delimited by closing the connection. `curl
//! --unix-socket` and Prometheus speak it; a full HTTP stack would be most of the
//! controller's memory for three routes.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest request head accepted.
pub const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl Request {
    /// The value of query parameter `key`, if given.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a boolean parameter is set (`?follow`, `?follow=1`, `?follow=true`).
    pub fn flag(&self, key: &str) -> bool {
        self.param(key)
            .is_some_and(|v| matches!(v, "" | "1" | "true" | "yes"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("the connection closed before a whole request arrived")]
    Incomplete,
    #[error("the request head is longer than {MAX_HEAD} bytes")]
    TooLong,
    #[error("malformed request line {0:?}")]
    Malformed(String),
    #[error("reading the request")]
    Io(#[from] std::io::Error),
}

/// Reads one request head (up to the blank line).
pub async fn read_request<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Request, HttpError> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while find_end(&head).is_none() {
        if head.len() > MAX_HEAD {
            return Err(HttpError::TooLong);
        }
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Err(HttpError::Incomplete);
        }
        head.extend_from_slice(&chunk[..n]);
    }
    parse_head(&head)
}

fn find_end(head: &[u8]) -> Option<usize> {
    head.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Parses the request line of `head`; headers are not needed by any route.
pub fn parse_head(head: &[u8]) -> Result<Request, HttpError> {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(line.to_owned()));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(HttpError::Malformed(line.to_owned()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query,
    })
}

/// A complete response.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A JSON error body: `{"error": "..."}`.
pub fn error(status: u16, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": message }).to_string() + "\n";
    response(status, "application/json", body.as_bytes())
}

/// The head of a streamed response: the body ends when the connection closes.
pub fn stream_head(content_type: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}

/// Writes `bytes` and flushes.
pub async fn send<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// A response as a client reads it: the status, and the body's reader after the head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub content_length: Option<usize>,
}

/// Parses a response head (status line and headers, up to the blank line).
pub fn parse_response_head(head: &str) -> Option<ResponseHead> {
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let content_length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok());
    Some(ResponseHead {
        status,
        content_length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_with_their_query() {
        let request =
            parse_head(b"GET /v1/events?follow=1&limit=5 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/v1/events");
        assert!(request.flag("follow"));
        assert_eq!(request.param("limit"), Some("5"));
        assert!(!request.flag("wait"));
        for bad in [
            &b"GET\r\n\r\n"[..],
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / SPDY\r\n\r\n",
            b"A B C D\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn a_head_split_over_reads_is_read_whole_and_an_endless_one_is_refused() {
        let mut reader: &[u8] = b"POST /v1/sync HTTP/1.1\r\n\r\n";
        assert_eq!(read_request(&mut reader).await.unwrap().path, "/v1/sync");
        let mut truncated: &[u8] = b"GET / HTTP/1.1\r\n";
        assert!(matches!(
            read_request(&mut truncated).await,
            Err(HttpError::Incomplete)
        ));
        let long = vec![b'a'; MAX_HEAD + 1024];
        let mut long: &[u8] = &long;
        assert!(matches!(
            read_request(&mut long).await,
            Err(HttpError::TooLong)
        ));
    }

    #[test]
    fn responses_carry_their_length_and_clients_read_it_back() {
        let bytes = response(200, "text/plain", b"hello");
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let parsed = parse_response_head(head).unwrap();
        assert_eq!((parsed.status, parsed.content_length), (200, Some(5)));
        assert_eq!(body, "hello");
        assert_eq!(
            parse_response_head("HTTP/1.1 403 Forbidden\r\nConnection: close")
                .unwrap()
                .status,
            403
        );
    }
}
