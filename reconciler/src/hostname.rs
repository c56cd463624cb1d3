//! The name this host answers to in `metadata.host` selectors.

/// The kernel's hostname (`uname -n`), or `localhost` if it cannot be read.
pub fn current() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
