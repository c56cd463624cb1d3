//! Reading gitvisor's nftables table again only when nftables changed.
//!
//! # Why
//!
//! `nft -j list table inet gitvisor` prints every rule of the table: with 10 000
//! host-only bridges, 20 000 rules, 7.6 MB of JSON and most of a second of `nft` alone,
//! on every plan, whether anything changed or not.
//!
//! The kernel counts the nftables transactions committed in a network namespace: the
//! ruleset generation (`NFT_MSG_GETGEN` answers `NFTA_GEN_ID`), which every commit to
//! any table moves on. A table's handle (`NFTA_TABLE_HANDLE`) comes from one counter
//! for the whole kernel, so no two tables get the same one in a boot: it tells this
//! table from one deleted and made again, or from the table of another namespace. So
//! `(boot id, table handle, generation)` names one content of the table, and a listing
//! recorded under it is still the table while the three stay the same.
//!
//! The listing is recorded in the run dir (`<run-dir>/network/nft-table.json`, a tmpfs
//! on a real host, written whole and renamed into place), so one-shot commands (`plan`,
//! `apply`) share it with each other and with the controller. It is recorded only when
//! the key read before `nft` ran is still the key after, so it is never filed under a
//! generation it does not belong to. Both reads go over one `NETLINK_NETFILTER` socket
//! (two small messages, no `nft` process); when they fail (no permission, an old kernel),
//! or the table is absent, the table is listed as before.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use serde::{Deserialize, Serialize};

use super::nft::{TABLE, TableState};

const NETLINK_NETFILTER: isize = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NFPROTO_INET: u8 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_HANDLE: u16 = 4;
const NFTA_GEN_ID: u16 = 1;
/// How long the kernel gets to answer both questions.
const DEADLINE: Duration = Duration::from_secs(2);
/// The recorded listing, under the network dir.
const RECORD: &str = "nft-table.json";

/// Which content of gitvisor's table a listing is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableGeneration {
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot: String,
    /// The table's handle (unique in a boot).
    pub table: u64,
    /// The namespace's ruleset generation.
    pub generation: u32,
}

/// A listing and the generation it was read at.
#[derive(Debug, Serialize, Deserialize)]
struct Recorded {
    key: TableGeneration,
    table: TableState,
}

/// The generation could not be read (the table is then listed as before).
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("cannot ask the kernel for the nftables generation: netlink socket: {cause}")]
    Socket {
        #[source]
        cause: std::io::Error,
    },
    #[error("the kernel did not answer the nftables generation request within {DEADLINE:?}")]
    Timeout,
    #[error("the kernel refused the nftables {what} request (errno {errno})")]
    Refused { what: &'static str, errno: i32 },
    #[error("cannot read /proc/sys/kernel/random/boot_id: {cause}")]
    BootId {
        #[source]
        cause: std::io::Error,
    },
}

/// The current key of gitvisor's table; `None` when the table does not exist.
pub async fn current() -> Result<Option<TableGeneration>, GenerationError> {
    let boot = tokio::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .await
        .map_err(|cause| GenerationError::BootId { cause })?;
    let Some((table, generation)) = tokio::time::timeout(DEADLINE, ask_kernel())
        .await
        .map_err(|_| GenerationError::Timeout)??
    else {
        return Ok(None);
    };
    Ok(Some(TableGeneration {
        boot: boot.trim().to_owned(),
        table,
        generation,
    }))
}

/// The table's handle and the ruleset generation, over one netlink socket; `None` when
/// the table does not exist.
async fn ask_kernel() -> Result<Option<(u64, u32)>, GenerationError> {
    let socket_error = |cause| GenerationError::Socket { cause };
    let mut socket = TokioSocket::new(NETLINK_NETFILTER).map_err(socket_error)?;
    socket
        .socket_mut()
        .bind(&SocketAddr::new(0, 0))
        .map_err(socket_error)?;
    let mut name = TABLE.as_bytes().to_vec();
    name.push(0);
    let mut requests = request(NFT_MSG_GETGEN, 1, 0, &[]);
    requests.extend(request(
        NFT_MSG_GETTABLE,
        2,
        NFPROTO_INET,
        &[(NFTA_TABLE_NAME, &name)],
    ));
    socket.send(&requests).await.map_err(socket_error)?;
    let (mut handle, mut generation) = (None, None);
    while generation.is_none() || handle.is_none() {
        let (buffer, _) = socket.recv_from_full().await.map_err(socket_error)?;
        for (kind, sequence, body) in messages(&buffer) {
            match (kind, sequence) {
                (NLMSG_ERROR, _) => {
                    let errno = body
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    match sequence {
                        // The table does not exist (ENOENT): nothing to reuse.
                        2 if errno == -2 => return Ok(None),
                        _ if errno != 0 => {
                            let what = if sequence == 1 { "generation" } else { "table" };
                            return Err(GenerationError::Refused { what, errno });
                        }
                        _ => {}
                    }
                }
                (kind, 1) if kind == nft_type(NFT_MSG_NEWGEN) => {
                    generation = attribute(body, NFTA_GEN_ID)
                        .and_then(|v| v.try_into().ok())
                        .map(u32::from_be_bytes);
                }
                (kind, 2) if kind == nft_type(NFT_MSG_NEWTABLE) => {
                    handle = attribute(body, NFTA_TABLE_HANDLE)
                        .and_then(|v| v.try_into().ok())
                        .map(u64::from_be_bytes);
                }
                _ => {}
            }
        }
    }
    Ok(handle.zip(generation))
}

fn nft_type(message: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | message
}

/// One nfnetlink request: header, `nfgenmsg` (family, version 0, resource id 0), and
/// attributes, each padded to 4 bytes.
fn request(message: u16, sequence: u32, family: u8, attributes: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = vec![family, 0, 0, 0];
    for (kind, value) in attributes {
        let length = 4 + value.len();
        body.extend((length as u16).to_ne_bytes());
        body.extend(kind.to_ne_bytes());
        body.extend(*value);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut buffer = Vec::with_capacity(16 + body.len());
    buffer.extend(((16 + body.len()) as u32).to_ne_bytes());
    buffer.extend(nft_type(message).to_ne_bytes());
    buffer.extend(NLM_F_REQUEST.to_ne_bytes());
    buffer.extend(sequence.to_ne_bytes());
    buffer.extend(0u32.to_ne_bytes());
    buffer.extend(body);
    buffer
}

/// The messages of one netlink buffer: type, sequence number, body (after the header),
/// read in place.
fn messages(buffer: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(header) = buffer.get(at..at + 16) {
        let length = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some(message) = buffer.get(at..at + length).filter(|_| length >= 16) else {
            break;
        };
        let kind = u16::from_ne_bytes([header[4], header[5]]);
        let sequence = u32::from_ne_bytes([header[8], header[9], header[10], header[11]]);
        found.push((kind, sequence, &message[16..]));
        at += length.next_multiple_of(4);
    }
    found
}

/// The value of attribute `wanted` of an nftables message body (after `nfgenmsg`).
fn attribute(body: &[u8], wanted: u16) -> Option<&[u8]> {
    let mut at = 4;
    while let Some(header) = body.get(at..at + 4) {
        let length = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        // The top bits are flags (nested, byte order).
        let kind = u16::from_ne_bytes([header[2], header[3]]) & 0x3fff;
        let value = body.get(at + 4..at + length.max(4))?;
        if kind == wanted {
            return Some(value);
        }
        at += length.max(4).next_multiple_of(4);
    }
    None
}

/// The path of the recorded listing under the network dir.
pub fn record_path(network_dir: &Path) -> PathBuf {
    network_dir.join(RECORD)
}

/// The listing recorded under `key`, if that is the one recorded (a missing, damaged or
/// other generation's record is none). Blocking: call it off the async runtime.
pub fn recorded(network_dir: &Path, key: &TableGeneration) -> Option<TableState> {
    let text = std::fs::read(record_path(network_dir)).ok()?;
    let recorded: Recorded = serde_json::from_slice(&text).ok()?;
    (recorded.key == *key).then_some(recorded.table)
}

/// Records `table` as the listing of `key` (written whole, then renamed into place).
/// Blocking: call it off the async runtime.
pub fn record(network_dir: &Path, key: TableGeneration, table: TableState) -> std::io::Result<()> {
    let recorded = Recorded { key, table };
    let text = serde_json::to_vec(&recorded).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(network_dir)?;
    let path = record_path(network_dir);
    // A name of this process's own: two gitvisors on one run dir (a `plan` beside the
    // controller) never write into the same file.
    let partial = network_dir.join(format!("{RECORD}.{}.partial", std::process::id()));
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_a_padded_nfnetlink_message() {
        let message = request(
            NFT_MSG_GETTABLE,
            7,
            NFPROTO_INET,
            &[(NFTA_TABLE_NAME, b"gitvisor\0")],
        );
        assert_eq!(
            message.len(),
            16 + 4 + 16,
            "header, nfgenmsg, 13 bytes padded to 16"
        );
        let found = messages(&message);
        assert_eq!(found.len(), 1);
        let (kind, sequence, body) = found[0];
        assert_eq!((kind, sequence), (nft_type(NFT_MSG_GETTABLE), 7));
        assert_eq!(body[0], NFPROTO_INET);
        assert_eq!(attribute(body, NFTA_TABLE_NAME), Some(&b"gitvisor\0"[..]));
        assert_eq!(attribute(body, NFTA_TABLE_HANDLE), None);
    }

    #[test]
    fn a_record_is_read_back_only_under_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = TableGeneration {
            boot: "b".into(),
            table: 3,
            generation: 41,
        };
        let mut table = TableState {
            marked: true,
            ..TableState::default()
        };
        table.chains.entry("x".into()).or_default();
        assert_eq!(recorded(dir.path(), &key), None);
        record(dir.path(), key.clone(), table.clone()).unwrap();
        assert_eq!(recorded(dir.path(), &key), Some(table));
        let later = TableGeneration {
            generation: 42,
            ..key.clone()
        };
        assert_eq!(recorded(dir.path(), &later), None);
        let remade = TableGeneration { table: 4, ..key };
        assert_eq!(recorded(dir.path(), &remade), None);
        std::fs::write(record_path(dir.path()), "{").unwrap();
        assert_eq!(
            recorded(dir.path(), &later),
            None,
            "a damaged record is none"
        );
    }
}
