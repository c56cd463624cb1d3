//! Images from a URL (`source: {url: …, sha256: …}`): downloaded once into a
//! content-addressed cache under the state dir, verified, then written like an image
//! file.
//!
//! # The cache
//!
//! `<state>/images/sha256-<HEX>` for a declared digest (any URL with that content is the
//! same file, downloaded once), `<state>/images/url-<sha256 of the URL>` for an HTTPS URL
//! without one. A download goes to `<name>.partial` and becomes the cache file only once
//! complete and verified (a rename), so a cache file is always a whole, checked image;
//! a wrong digest removes the `.partial` and fails with the URL and both digests. A
//! `<name>.lock` (flock) makes volumes created in parallel from one image share one
//! download.
//!
//! # Resuming, stalls, progress
//!
//! An interrupted download (a dropped connection, a kill, a stalled server) leaves the
//! `.partial`; the next attempt asks for the rest (`Range: bytes=N-`) and appends when the
//! server answers `206`, or starts over on a `200`. Every read gives up after
//! [`stall_timeout`] without a byte (`GITVISOR_DOWNLOAD_STALL_TIMEOUT`, default 30 s), so
//! a server that stops sending fails the step instead of holding it; a slow but moving
//! download is never cut off (the step's own deadline still applies). Progress goes to
//! the step (and the log) every 10%. The transfer runs on a blocking thread; a cancelled
//! step stops it at the next read.
//!
//! # Transport
//!
//! HTTPS is verified against the host's CA bundle: `SSL_CERT_FILE` when set (what
//! OpenSSL, curl and Python read, so a private CA is one variable), else
//! `/etc/ssl/certs/ca-certificates.crt` or `/etc/pki/tls/certs/ca-bundle.crt`. Plain
//! HTTP only with a digest (validation refuses it otherwise): the digest is what makes
//! the bytes trustworthy, not the channel.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "the image downloaded from {url} has sha256 {actual}, but the manifest declares {expected}; the download was discarded. Fix spec.source.sha256, or the URL"
    )]
    WrongDigest {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("downloading {url}: {message}")]
    Transfer { url: String, message: String },
    #[error("downloading {url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("downloading {url}: {operation} {path}")]
    Io {
        url: String,
        operation: &'static str,
        path: String,
        #[source]
        cause: io::Error,
    },
    #[error("downloading {url}: stopped (the step was cancelled or ran out of time)")]
    Cancelled { url: String },
}

impl DownloadError {
    /// Whether trying again can help: a transfer that broke or stalled resumes; a wrong
    /// digest, a refusal (404) or a local file error needs someone.
    pub fn transient(&self) -> bool {
        match self {
            DownloadError::Transfer { .. } | DownloadError::Cancelled { .. } => true,
            DownloadError::Status { status, .. } => *status >= 500 || *status == 429,
            DownloadError::WrongDigest { .. } | DownloadError::Io { .. } => false,
        }
    }
}

/// How long a read may wait for a byte (`GITVISOR_DOWNLOAD_STALL_TIMEOUT`, a humantime
/// duration; default 30 s).
pub fn stall_timeout() -> Duration {
    std::env::var("GITVISOR_DOWNLOAD_STALL_TIMEOUT")
        .ok()
        .and_then(|text| humantime::parse_duration(text.trim()).ok())
        .filter(|timeout| !timeout.is_zero())
        .unwrap_or(Duration::from_secs(30))
}

/// The cache file for `url` (and its digest, when declared) under `cache`.
pub fn cache_path(cache: &Path, url: &str, sha256: Option<&str>) -> PathBuf {
    match sha256 {
        Some(digest) => cache.join(format!("sha256-{digest}")),
        None => cache.join(format!("url-{:x}", Sha256::digest(url.as_bytes()))),
    }
}

/// Makes sure the cache holds `url`'s image, verified; returns its path. Blocking: run
/// it on a blocking thread. `progress` is told each 10% step; `stop` ends it at the next
/// read.
pub fn fetch(
    cache: &Path,
    url: &str,
    sha256: Option<&str>,
    progress: &dyn Fn(String),
    stop: &AtomicBool,
) -> Result<PathBuf, DownloadError> {
    let target = cache_path(cache, url, sha256);
    if target.is_file() {
        return Ok(target);
    }
    let io = |operation: &'static str, path: &Path| {
        let (url, path) = (url.to_owned(), path.display().to_string());
        move |cause| DownloadError::Io {
            url,
            operation,
            path,
            cause,
        }
    };
    fs::create_dir_all(cache).map_err(io("make directory", cache))?;
    // One download per cache file: volumes applied in parallel from the same image wait
    // for the first, then find the cache file.
    let lock_path = target.with_extension("lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("open", &lock_path))?;
    lock.lock().map_err(io("lock", &lock_path))?;
    if target.is_file() {
        return Ok(target);
    }
    let partial = target.with_extension("partial");
    let have = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let agent = agent(url)?;
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let transfer = |e: ureq::Error| DownloadError::Transfer {
        url: url.to_owned(),
        message: e.to_string(),
    };
    let mut response = request.call().map_err(transfer)?;
    let status = response.status().as_u16();
    let (mut file, start) = match status {
        206 if have > 0 => {
            progress(format!("resuming {url} at {have} bytes"));
            let file = fs::OpenOptions::new()
                .append(true)
                .open(&partial)
                .map_err(io("open", &partial))?;
            (file, have)
        }
        200 => (
            fs::File::create(&partial).map_err(io("create", &partial))?,
            0,
        ),
        _ => {
            return Err(DownloadError::Status {
                url: url.to_owned(),
                status,
            });
        }
    };
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|length| length + start);
    let mut body = response.body_mut().as_reader();
    let mut buffer = vec![0u8; 1 << 16];
    let mut written = start;
    let mut last_tenth = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(DownloadError::Cancelled {
                url: url.to_owned(),
            });
        }
        let read = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = file.flush();
                return Err(DownloadError::Transfer {
                    url: url.to_owned(),
                    message: format!(
                        "{e} after {written} bytes (the next attempt resumes from there)"
                    ),
                });
            }
        };
        file.write_all(&buffer[..read])
            .map_err(io("write", &partial))?;
        written += read as u64;
        if let Some(total) = total.filter(|t| *t > 0) {
            let tenth = written * 10 / total;
            if last_tenth != Some(tenth) {
                last_tenth = Some(tenth);
                progress(format!("downloading {url}: {}%", tenth * 10));
            }
        }
    }
    file.sync_all().map_err(io("sync", &partial))?;
    drop(file);
    if let Some(total) = total
        && written < total
    {
        return Err(DownloadError::Transfer {
            url: url.to_owned(),
            message: format!(
                "the connection ended after {written} of {total} bytes (the next attempt resumes from there)"
            ),
        });
    }
    let actual = digest_of(&partial).map_err(io("read", &partial))?;
    if let Some(expected) = sha256
        && actual != expected
    {
        let _ = fs::remove_file(&partial);
        return Err(DownloadError::WrongDigest {
            url: url.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    progress(format!("downloaded {url}: sha256 {actual}"));
    fs::rename(&partial, &target).map_err(io("rename", &target))?;
    Ok(target)
}

fn digest_of(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// An agent verifying HTTPS against the host's CA bundle, with the stall timeout.
fn agent(url: &str) -> Result<ureq::Agent, DownloadError> {
    let tls = match crate::drivers::ca_bundle::host_ca_bundle() {
        Some(bundle) => {
            crate::drivers::ca_bundle::trusting(&bundle).map_err(|cause| DownloadError::Io {
                url: url.to_owned(),
                operation: "read the CA bundle",
                path: bundle.display().to_string(),
                cause,
            })?
        }
        None => ureq::tls::TlsConfig::builder().build(),
    };
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(stall_timeout()))
        .timeout_per_read(Some(stall_timeout()))
        .build()
        .new_agent())
}

/// Sets its flag when dropped: a cancelled step's future is dropped, and the blocking
/// transfer sees the flag at its next read.
pub struct StopOnDrop(pub Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
