//! The DHCP leases each managed bridge's dnsmasq has handed out, for `gitvisor status`
//! and the controller's `GET /v1/status`: read from the lease files dnsmasq keeps under
//! the run dir (`<run-dir>/network/dhcp/<bridge>/leases`, see [`super::dnsmasq`]), one
//! per bridge serving DHCP, with async file reads so the runtime is never blocked.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::dnsmasq::{DhcpPaths, Lease, parse_leases};

/// Each bridge serving DHCP (by name) and its current leases, in the file's order.
pub type Leases = BTreeMap<String, Vec<Lease>>;

/// Why the leases could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot {operation} {path}: {source}; check the run dir's permissions")]
    Read {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The leases of every bridge with a dnsmasq directory under `network_dir`. A bridge
/// whose dnsmasq has not written its lease file yet has none.
pub async fn read_leases(network_dir: &Path) -> Result<Leases, LeaseError> {
    let dhcp = network_dir.join("dhcp");
    let failed = |operation, path: &Path| {
        let path = path.to_path_buf();
        move |source| LeaseError::Read {
            operation,
            path,
            source,
        }
    };
    let mut leases = Leases::new();
    let mut entries = match tokio::fs::read_dir(&dhcp).await {
        Ok(entries) => entries,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(leases),
        Err(error) => {
            return Err(failed("list the DHCP servers' directories in", &dhcp)(
                error,
            ));
        }
    };
    while let Some(entry) = entries.next_entry().await.map_err(failed("list", &dhcp))? {
        let Ok(bridge) = entry.file_name().into_string() else {
            continue;
        };
        if !entry.file_type().await.is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let file = DhcpPaths::new(network_dir, &bridge).leases();
        let text = match tokio::fs::read_to_string(&file).await {
            Ok(text) => text,
            Err(error) if error.kind() == ErrorKind::NotFound => String::new(),
            Err(error) => return Err(failed("read the DHCP leases in", &file)(error)),
        };
        leases.insert(bridge, parse_leases(&text));
    }
    Ok(leases)
}

/// `leases` as JSON: per bridge, its leases ([`Lease`]'s JSON form).
pub fn leases_json(leases: &Leases) -> Value {
    json!(leases)
}
