//! Pulling from an OCI registry over the distribution API (`/v2/…`), into the store.
//!
//! # Order of steps
//!
//! 1. The manifest: `GET /v2/REPO/manifests/REF` (a tag, or the pinned digest), asking
//!    for OCI and Docker manifests and indexes. Its bytes are verified against the
//!    pinned digest, or hashed to name it; an index is followed to this host's
//!    platform by digest. A pinned manifest already in the store is not fetched again.
//!    One larger than [`MAX_METADATA`] is refused as too large, never cut off and then
//!    misread.
//! 2. The config and layers: the store's import ([`ImageStore::import_manifest`])
//!    fetches `GET /v2/REPO/blobs/DIGEST` only for what it does not have, verifying
//!    every byte. An image is pulled once and shared by digest.
//!
//! # Transport and credentials
//!
//! HTTPS, verified against the host's CA store (`SSL_CERT_FILE`, else the system bundle
//! at `/etc/ssl/certs/ca-certificates.crt` or `/etc/pki/tls/certs/ca-bundle.crt`).
//! Plain HTTP only for registries declared insecure: `GITVISOR_INSECURE_REGISTRIES`,
//! a comma-separated list of `host[:port]`. Credentials come from a docker-style
//! `auth.json` (`{"auths": {"host:port": {"auth": base64(user:password)}}}`): the file
//! `GITVISOR_REGISTRY_AUTH_FILE` names, else `/etc/gitvisor/auth.json`, else
//! `$XDG_RUNTIME_DIR/containers/auth.json`, else `~/.docker/config.json`. A `401` with a
//! `Bearer` challenge is answered with a token from the realm it names (with the
//! credentials, when there are any); a `Basic` challenge with the credentials.
//!
//! # Timeouts
//!
//! Nothing waits on a registry for ever: 15 s to connect, 60 s for the answer's headers,
//! and every read of a body gives up after `GITVISOR_REGISTRY_READ_TIMEOUT` (default 30 s)
//! without a byte, so a registry that stalls mid-download fails the pull (a transient
//! failure, retried) instead of holding the step and its thread. A slow but moving
//! download is never cut off. The step's cancellation and deadline reach the download
//! too (see [`super::abandon`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::PreparedImage;
use super::beneath::MAX_METADATA;
use super::digest::Sha256Digest;
use super::error::ImageError;
use super::reference::RegistryRef;
use super::store::{BlobSource, ImageStore, host_architecture};

/// The manifest types gitvisor reads.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Where a registry's settings come from.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// `host[:port]` that may be reached over plain HTTP.
    pub insecure: Vec<String>,
    /// The auth file, when there is one.
    pub auth_file: Option<PathBuf>,
    /// The CA bundle, when there is one (else the built-in Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// How long one read may wait for a byte.
    pub read_timeout: Duration,
}

/// How long one read from a registry may wait, unless `GITVISOR_REGISTRY_READ_TIMEOUT`
/// says otherwise.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            insecure: Vec::new(),
            auth_file: None,
            ca_file: None,
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }
}

impl RegistrySettings {
    /// From the environment and the usual file locations.
    pub fn from_env() -> Self {
        let insecure = std::env::var("GITVISOR_INSECURE_REGISTRIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        let auth_file = std::env::var_os("GITVISOR_REGISTRY_AUTH_FILE")
            .map(PathBuf::from)
            .or_else(|| {
                let mut candidates = vec![PathBuf::from("/etc/gitvisor/auth.json")];
                if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
                    candidates.push(PathBuf::from(runtime).join("containers/auth.json"));
                }
                if let Some(home) = std::env::var_os("HOME") {
                    candidates.push(PathBuf::from(home).join(".docker/config.json"));
                }
                candidates.into_iter().find(|p| p.is_file())
            });
        let ca_file = crate::drivers::ca_bundle::host_ca_bundle();
        let read_timeout = match std::env::var("GITVISOR_REGISTRY_READ_TIMEOUT") {
            Ok(text) => match humantime::parse_duration(text.trim()) {
                Ok(timeout) if !timeout.is_zero() => timeout,
                _ => {
                    tracing::warn!(
                        "ignoring GITVISOR_REGISTRY_READ_TIMEOUT={text}: not a duration above zero (30s, 2m); reads wait {}",
                        humantime::format_duration(DEFAULT_READ_TIMEOUT)
                    );
                    DEFAULT_READ_TIMEOUT
                }
            },
            Err(_) => DEFAULT_READ_TIMEOUT,
        };
        RegistrySettings {
            insecure,
            auth_file,
            ca_file,
            read_timeout,
        }
    }
}

/// Pulls `reference` into `store`, with the settings of the environment.
pub fn pull(
    store: &ImageStore,
    image: &str,
    reference: &RegistryRef,
) -> Result<PreparedImage, ImageError> {
    pull_with(store, image, reference, &RegistrySettings::from_env())
}

/// Pulls `reference` into `store`.
pub fn pull_with(
    store: &ImageStore,
    image: &str,
    reference: &RegistryRef,
    settings: &RegistrySettings,
) -> Result<PreparedImage, ImageError> {
    let client = Client::new(image, reference, settings)?;
    let manifest = client.manifest(store)?;
    store.import_manifest(image, &client, &manifest)
}

/// One registry repository, with its credentials and token.
struct Client<'a> {
    image: &'a str,
    reference: &'a RegistryRef,
    base: String,
    agent: ureq::Agent,
    credentials: Option<String>,
    token: Mutex<Option<String>>,
}

impl<'a> Client<'a> {
    fn new(
        image: &'a str,
        reference: &'a RegistryRef,
        settings: &RegistrySettings,
    ) -> Result<Self, ImageError> {
        let insecure = settings.insecure.contains(&reference.registry);
        let scheme = if insecure { "http" } else { "https" };
        let tls = match &settings.ca_file {
            Some(ca_file) => crate::drivers::ca_bundle::trusting(ca_file)
                .map_err(ImageError::io(image, "read", ca_file))?,
            None => ureq::tls::TlsConfig::builder().build(),
        };
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_send_request(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(settings.read_timeout))
            .build()
            .new_agent();
        Ok(Client {
            image,
            reference,
            base: format!(
                "{scheme}://{}/v2/{}",
                reference.api_host(),
                reference.repository
            ),
            agent,
            credentials: credentials(settings, &reference.registry)?,
            token: Mutex::new(None),
        })
    }

    fn error(
        &self,
        operation: String,
        transient: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ImageError {
        ImageError::Registry {
            image: self.image.to_owned(),
            operation,
            source: source.into(),
            transient,
        }
    }

    /// `GET url`, answering an authentication challenge once.
    fn get(
        &self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, ImageError> {
        let send = |authorization: Option<String>| {
            let mut request = self.agent.get(url);
            if let Some(accept) = accept {
                request = request.header("Accept", accept);
            }
            if let Some(authorization) = authorization {
                request = request.header("Authorization", authorization);
            }
            request
                .call()
                .map_err(|e| self.error(format!("GET {url}"), true, e))
        };
        let token = self.token.lock().map(|t| t.clone()).unwrap_or_default();
        let response = send(token.map(|t| format!("Bearer {t}")))?;
        if response.status() != 401 {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let authorization = if challenge.to_ascii_lowercase().starts_with("bearer ") {
            let token = self.token(&challenge)?;
            if let Ok(mut slot) = self.token.lock() {
                *slot = Some(token.clone());
            }
            format!("Bearer {token}")
        } else if let Some(credentials) = &self.credentials {
            format!("Basic {credentials}")
        } else {
            return Err(self.error(
                format!("GET {url}"),
                false,
                format!(
                    "the registry asks for credentials ({challenge}); add them for {} to an auth.json (GITVISOR_REGISTRY_AUTH_FILE)",
                    self.reference.registry
                ),
            ));
        };
        send(Some(authorization))
    }

    /// A bearer token from the challenge's realm.
    fn token(&self, challenge: &str) -> Result<String, ImageError> {
        let parameters = challenge_parameters(&challenge[7..]);
        let realm = parameters.get("realm").ok_or_else(|| {
            self.error(
                "authenticate".into(),
                false,
                format!("the registry's challenge names no realm: {challenge}"),
            )
        })?;
        let mut url = realm.clone();
        let mut separator = if url.contains('?') { '&' } else { '?' };
        for key in ["service", "scope"] {
            let value = match (key, parameters.get(key)) {
                (_, Some(value)) => value.clone(),
                ("scope", None) => format!("repository:{}:pull", self.reference.repository),
                _ => continue,
            };
            url.push(separator);
            url.push_str(key);
            url.push('=');
            url.push_str(&percent_encode(&value));
            separator = '&';
        }
        let mut request = self.agent.get(&url);
        if let Some(credentials) = &self.credentials {
            request = request.header("Authorization", format!("Basic {credentials}"));
        }
        let mut response = request
            .call()
            .map_err(|e| self.error(format!("GET token from {realm}"), true, e))?;
        if !response.status().is_success() {
            return Err(self.error(
                format!("GET token from {realm}"),
                response.status().is_server_error(),
                format!("the token service answered {}", response.status()),
            ));
        }
        let body: serde_json::Value = serde_json::from_reader(response.body_mut().as_reader())
            .map_err(|e| self.error(format!("read the token from {realm}"), true, e))?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                self.error(
                    format!("read the token from {realm}"),
                    false,
                    "no token in the answer",
                )
            })
    }

    fn fetch_manifest(&self, reference: &str) -> Result<Vec<u8>, ImageError> {
        let url = format!("{}/manifests/{reference}", self.base);
        let mut response = self.get(&url, Some(ACCEPT))?;
        let status = response.status();
        if !status.is_success() {
            let not_found = status == 404;
            return Err(self.error(
                format!("GET {url}"),
                status.is_server_error() || status == 429,
                if not_found {
                    format!(
                        "the registry has no manifest {reference} in {}",
                        self.reference.repository
                    )
                } else {
                    format!("the registry answered {status}")
                },
            ));
        }
        let mut bytes = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_METADATA + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.error(format!("read {url}"), true, e))?;
        if bytes.len() as u64 > MAX_METADATA {
            return Err(ImageError::format(
                self.image,
                format!("the manifest {reference} at {url}"),
                format!(
                    "the registry sent more than {} MiB, the most gitvisor reads of a manifest or index; that is no image manifest: check that the reference names an image and that the registry serves it",
                    MAX_METADATA >> 20
                ),
            ));
        }
        Ok(bytes)
    }

    /// The image manifest for this host, verified, kept in the store.
    fn manifest(&self, store: &ImageStore) -> Result<ImageManifest, ImageError> {
        let (mut bytes, mut expected) = match &self.reference.digest {
            Some(digest) => match std::fs::read(store.blob_path(digest)) {
                Ok(bytes) if Sha256Digest::of(&bytes) == *digest => (bytes, Some(digest.clone())),
                _ => (
                    self.fetch_manifest(&digest.to_string())?,
                    Some(digest.clone()),
                ),
            },
            None => (
                self.fetch_manifest(&self.reference.manifest_reference())?,
                None,
            ),
        };
        for _ in 0..4 {
            let actual = Sha256Digest::of(&bytes);
            if let Some(expected) = &expected
                && actual != *expected
            {
                return Err(ImageError::DigestMismatch {
                    image: self.image.to_owned(),
                    what: "the manifest".into(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
            store.keep_blob(self.image, &bytes)?;
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ImageError::format(self.image, "the manifest", e))?;
            if value.get("manifests").is_none() {
                return ImageManifest::from_reader(&bytes[..])
                    .map_err(|e| ImageError::format(self.image, "the image manifest", e));
            }
            let index = ImageIndex::from_reader(&bytes[..])
                .map_err(|e| ImageError::format(self.image, "the image index", e))?;
            let chosen = platform(self.image, index.manifests())?;
            let digest = super::store::digest_of(self.image, "a manifest descriptor", chosen)?;
            bytes = match std::fs::read(store.blob_path(&digest)) {
                Ok(bytes) if Sha256Digest::of(&bytes) == digest => bytes,
                _ => self.fetch_manifest(&digest.to_string())?,
            };
            expected = Some(digest);
        }
        Err(ImageError::format(
            self.image,
            "the image index",
            "indexes nest more than 4 deep",
        ))
    }
}

impl BlobSource for Client<'_> {
    fn open(&self, digest: &Sha256Digest) -> Result<Box<dyn Read + '_>, ImageError> {
        let url = format!("{}/blobs/{digest}", self.base);
        let response = self.get(&url, None)?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.error(
                format!("GET {url}"),
                status.is_server_error() || status == 429,
                format!("the registry answered {status}"),
            ));
        }
        Ok(Box::new(response.into_body().into_reader()))
    }
}

fn platform<'d>(image: &str, manifests: &'d [Descriptor]) -> Result<&'d Descriptor, ImageError> {
    let architecture = host_architecture();
    manifests
        .iter()
        .find(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.architecture().to_string() == architecture && p.os().to_string() == "linux"
            })
        })
        .or_else(|| manifests.iter().find(|d| d.platform().is_none()))
        .ok_or_else(|| ImageError::NotFound {
            image: image.to_owned(),
            why: format!("the image has no variant for linux/{architecture}"),
        })
}

/// The base64 `user:password` for `registry` from the auth file, if it has one.
fn credentials(settings: &RegistrySettings, registry: &str) -> Result<Option<String>, ImageError> {
    let Some(path) = &settings.auth_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(ImageError::io(registry, "read", path))?;
    let file: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ImageError::format(registry, format!("auth file {}", path.display()), e))?;
    let auths = file.get("auths").and_then(|a| a.as_object());
    let entry = auths.and_then(|auths| {
        auths.iter().find_map(|(key, value)| {
            let key = key
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .trim_end_matches("/v1")
                .trim_end_matches("/v2");
            let hub = registry == super::reference::DOCKER_HUB
                && (key == "index.docker.io" || key == "registry-1.docker.io");
            (key == registry || hub).then_some(value)
        })
    });
    Ok(entry
        .and_then(|e| e.get("auth"))
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
        .map(str::to_owned))
}

/// `key="value", key2="value2"` of a `WWW-Authenticate` challenge.
fn challenge_parameters(text: &str) -> BTreeMap<String, String> {
    let mut parameters = BTreeMap::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        parameters.insert(key, value.to_owned());
        rest = remainder.trim_start_matches(',').trim();
    }
    parameters
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_challenge_is_parsed() {
        let parameters = challenge_parameters(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:app:pull""#,
        );
        assert_eq!(parameters["realm"], "https://auth.example/token");
        assert_eq!(parameters["service"], "registry.example");
        assert_eq!(parameters["scope"], "repository:app:pull");
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }

    #[test]
    fn credentials_come_from_the_auth_file_by_registry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        std::fs::write(
            &file,
            r#"{"auths": {"registry.example:5000": {"auth": "dXNlcjpwYXNz"}, "https://index.docker.io/v1/": {"auth": "aHViOmh1Yg=="}}}"#,
        )
        .unwrap();
        let settings = RegistrySettings {
            auth_file: Some(file),
            ..RegistrySettings::default()
        };
        assert_eq!(
            credentials(&settings, "registry.example:5000")
                .unwrap()
                .as_deref(),
            Some("dXNlcjpwYXNz")
        );
        assert_eq!(
            credentials(&settings, "docker.io").unwrap().as_deref(),
            Some("aHViOmh1Yg==")
        );
        assert_eq!(credentials(&settings, "other.example").unwrap(), None);
    }

    /// A registry on loopback serving the layout in `dir`, which stalls after the first
    /// bytes of every layer blob (headers sent, body promised, then nothing).
    fn stalling_registry(dir: &std::path::Path) -> (String, std::sync::mpsc::Sender<()>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let blobs = dir.join("blobs/sha256");
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let manifest_hex = index["manifests"][0]["digest"].as_str().unwrap()[7..].to_owned();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blobs.join(&manifest_hex)).unwrap()).unwrap();
        let layers: Vec<String> = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap()[7..].to_owned())
            .collect();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = std::sync::Arc::new(std::sync::Mutex::new(released));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let (blobs, manifest_hex, layers) =
                    (blobs.clone(), manifest_hex.clone(), layers.clone());
                let released = released.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut request = String::new();
                    reader.read_line(&mut request).unwrap();
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap() > 2 {
                        line.clear();
                    }
                    let path = request.split(' ').nth(1).unwrap_or_default().to_owned();
                    let hex = if path.contains("/manifests/") {
                        manifest_hex.clone()
                    } else {
                        path.rsplit("sha256:").next().unwrap_or_default().to_owned()
                    };
                    let body = std::fs::read(blobs.join(&hex)).unwrap_or_default();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    stream.write_all(head.as_bytes()).unwrap();
                    if layers.contains(&hex) {
                        stream.write_all(&body[..body.len() / 2]).unwrap();
                        stream.flush().unwrap();
                        // Stalled until the test ends.
                        let _ = released.lock().map(|r| r.recv());
                    } else {
                        stream.write_all(&body).unwrap();
                    }
                });
            }
        });
        (address, release)
    }

    /// A registry on loopback whose every manifest is `body`.
    fn registry_serving_manifest(body: Vec<u8>) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        address
    }

    #[test]
    fn a_manifest_larger_than_the_limit_is_refused_as_too_large() {
        // A well-formed manifest, padded past the limit with an annotation.
        let padding = "x".repeat((MAX_METADATA + (1 << 20)) as usize);
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{}", "0".repeat(64)),
                "size": 2
            },
            "layers": [],
            "annotations": {"padding": padding}
        }))
        .unwrap();
        let address = registry_serving_manifest(body);
        let store_dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(store_dir.path());
        let image = format!("{address}/team/app:v1");
        let reference = match super::super::ImageRef::parse(&image).unwrap() {
            super::super::ImageRef::Registry(reference) => reference,
            other => panic!("not a registry reference: {other:?}"),
        };
        let settings = RegistrySettings {
            insecure: vec![address.clone()],
            read_timeout: Duration::from_secs(5),
            ..RegistrySettings::default()
        };
        let error = pull_with(&store, &image, &reference, &settings).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, ImageError::Format { .. }),
            "{message}: {error:?}"
        );
        for part in [
            &image,
            "manifest v1",
            "more than 4 MiB",
            "check that the reference",
        ] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }
        use crate::contract::Classify;
        assert_eq!(
            error.class(),
            crate::contract::FailureClass::NeedsUser,
            "{message}"
        );
    }

    #[test]
    fn a_registry_that_stalls_mid_download_fails_the_pull_at_the_read_timeout() {
        let layout = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let noise: Vec<u8> = (0..64u32 << 10)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        super::super::store::tests::layout(layout.path(), &[("bin/app", &noise)]);
        let (address, _release) = stalling_registry(layout.path());
        let image = format!("{address}/team/app:v1");
        let settings = RegistrySettings {
            insecure: vec![address.clone()],
            read_timeout: Duration::from_secs(1),
            ..RegistrySettings::default()
        };
        let (done, finished) = std::sync::mpsc::channel();
        let began = std::time::Instant::now();
        std::thread::spawn(move || {
            let store = ImageStore::new(store_dir.path());
            let reference = match super::super::ImageRef::parse(&image).unwrap() {
                super::super::ImageRef::Registry(reference) => reference,
                other => panic!("not a registry reference: {other:?}"),
            };
            let _ = done.send(pull_with(&store, &image, &reference, &settings));
        });
        let outcome = finished
            .recv_timeout(Duration::from_secs(20))
            .expect("the pull should give up on a stalled registry, not wait for ever");
        let error = outcome.unwrap_err();
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{:?}",
            began.elapsed()
        );
        use crate::contract::Classify;
        assert_eq!(
            error.class(),
            crate::contract::FailureClass::Transient,
            "{error}"
        );
        let chain = format!("{error}: {:?}", std::error::Error::source(&error));
        assert!(
            chain.to_lowercase().contains("timed out")
                || chain.contains("TimedOut")
                || chain.contains("Timeout"),
            "{chain}"
        );
    }
}
