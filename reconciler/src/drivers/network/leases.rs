//! The DHCP leases each managed bridge's dnsmasq has handed out, for `gitvisor status`
//! and the controller's `GET /v1/status`: read from the lease files dnsmasq keeps under
//! the run dir (`<run-dir>/network/dhcp/<bridge>/leases`, see [`super::dnsmasq`]), one
//! per bridge serving DHCP, with async file reads so the runtime is never blocked.
//! The engine reaches them as the Bridge kind's status table ([`LEASES_TABLE`]).

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::dnsmasq::{DhcpPaths, Lease, parse_leases};
use crate::drivers::{Rows, StatusTable, TableError};

/// The leases as the Bridge kind's status table: `dhcpLeases` in JSON, `DHCP leases` in
/// text, one row per lease (a bridge whose dnsmasq has handed out none yet has one row
/// saying so).
pub(crate) const LEASES_TABLE: StatusTable = StatusTable {
    key: "dhcpLeases",
    title: "DHCP leases",
    read: read_table,
    rows: lease_rows,
};

/// The columns of [`LEASES_TABLE`], at widths that keep short tables' familiar shape.
const COLUMNS: &[(&str, usize)] = &[
    ("BRIDGE", 16),
    ("MAC", 18),
    ("ADDRESS", 16),
    ("HOSTNAME", 24),
    ("EXPIRES", 0),
];

fn read_table(run_dir: &Path) -> BoxFuture<'_, Result<Value, TableError>> {
    Box::pin(async move {
        let leases = read_leases(&super::network_dir(run_dir)).await?;
        Ok(leases_json(&leases))
    })
}

/// The rows of the leases' JSON form ([`leases_json`]).
fn lease_rows(value: &Value) -> Result<Rows, serde_json::Error> {
    let leases: Leases = serde_json::from_value(value.clone())?;
    let mut rows = Vec::new();
    for (bridge, leases) in &leases {
        if leases.is_empty() {
            rows.push(vec![bridge.clone(), "(none yet)".to_owned()]);
        }
        for lease in leases {
            rows.push(vec![
                bridge.clone(),
                lease.mac.clone(),
                lease.address.clone(),
                lease.name.clone().unwrap_or_else(|| "-".to_owned()),
                expiry(lease),
            ]);
        }
    }
    Ok(Rows {
        columns: COLUMNS,
        rows,
    })
}

/// A lease's expiry as people read it: RFC 3339, or `never` (dnsmasq writes 0).
fn expiry(lease: &Lease) -> String {
    if lease.expires == 0 {
        return "never".to_owned();
    }
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(lease.expires);
    humantime::format_rfc3339_seconds(when).to_string()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_leases_table_lists_each_bridges_leases_in_json_and_rows() {
        let run_dir = tempfile::tempdir().unwrap();
        let network = super::super::network_dir(run_dir.path());
        assert_eq!(
            (LEASES_TABLE.read)(run_dir.path()).await.unwrap(),
            json!({})
        );
        let br0 = DhcpPaths::new(&network, "br0");
        std::fs::create_dir_all(&br0.dir).unwrap();
        std::fs::write(
            br0.leases(),
            "1700000000 52:54:00:00:00:10 10.0.0.10 vm1 01:52:54:00:00:00:10\n0 52:54:00:00:00:11 10.0.0.150 * *\n",
        )
        .unwrap();
        // A bridge whose dnsmasq has not written its lease file yet.
        std::fs::create_dir_all(DhcpPaths::new(&network, "br1").dir).unwrap();
        let value = (LEASES_TABLE.read)(run_dir.path()).await.unwrap();
        assert_eq!(
            value,
            json!({
                "br0": [
                    {"mac": "52:54:00:00:00:10", "address": "10.0.0.10", "hostname": "vm1", "expiresUnix": 1700000000u64},
                    {"mac": "52:54:00:00:00:11", "address": "10.0.0.150", "hostname": null, "expiresUnix": 0},
                ],
                "br1": [],
            })
        );
        let rows = (LEASES_TABLE.rows)(&value).unwrap();
        assert_eq!(
            rows.columns.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
            ["BRIDGE", "MAC", "ADDRESS", "HOSTNAME", "EXPIRES"]
        );
        assert_eq!(
            rows.rows,
            [
                vec![
                    "br0",
                    "52:54:00:00:00:10",
                    "10.0.0.10",
                    "vm1",
                    "2023-11-14T22:13:20Z"
                ],
                vec!["br0", "52:54:00:00:00:11", "10.0.0.150", "-", "never"],
                vec!["br1", "(none yet)"],
            ]
        );
        assert!((LEASES_TABLE.rows)(&json!("not leases")).is_err());
    }
}
