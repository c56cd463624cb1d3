//! The host's CA bundle, for the drivers that speak HTTPS (image registries, image URLs).
//!
//! `SSL_CERT_FILE` when it names a file (what curl and OpenSSL honour, and how tests bring
//! a test CA), else Debian's `/etc/ssl/certs/ca-certificates.crt` or Red Hat's
//! `/etc/pki/tls/certs/ca-bundle.crt`; with none of them, ureq's built-in Mozilla roots.

use std::io;
use std::path::{Path, PathBuf};

/// The CA bundle this host trusts, when there is one.
pub fn host_ca_bundle() -> Option<PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            PathBuf::from("/etc/pki/tls/certs/ca-bundle.crt"),
        ])
        .find(|p| p.is_file())
}

/// A TLS configuration trusting the certificates in `bundle` (ureq's built-in roots when
/// it holds none). Reading the file is the only failure.
pub fn trusting(bundle: &Path) -> io::Result<ureq::tls::TlsConfig> {
    let pem = std::fs::read(bundle)?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder();
    Ok(if certs.is_empty() {
        tls.build()
    } else {
        tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .build()
    })
}
