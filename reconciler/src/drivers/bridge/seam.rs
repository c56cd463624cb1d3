//! The host seam of the bridge driver: what it reads from the kernel and the requests it
//! sends, as plain values.
//!
//! The driver never talks to netlink directly. It asks a [`LinkSeam`] for one snapshot of
//! every link and address on the host ([`LinkSeam::dump`]) and sends [`LinkRequest`]s one
//! at a time ([`LinkSeam::send`]). The real implementation is
//! [`NetlinkLinks`](super::netlink::NetlinkLinks); unit tests use the recording
//! [`FakeLinks`](super::fake::FakeLinks).
//!
//! Requests are idempotent on both implementations: adding an address that is already
//! there, deleting one that is gone, deleting a link that is gone, releasing a port that
//! is gone, putting a port on a VLAN it is on (the flags are set again) and taking it off
//! one it is not on all succeed. "Already there" is checked, never assumed from the errno: the
//! kernel answers `EEXIST` to an IPv6 address that the link has with another prefix
//! length too, and that is an error (the host does not match the request). Creating or
//! renaming a link to a name that is taken is an error (`EEXIST`): the driver only
//! creates what it observed as absent, and the next plan sorts out who owns the object
//! that appeared in between.
//!
//! Errors from the seam carry the kernel's answer only ([`NetlinkError`]); the driver wraps
//! them with the bridge and the operation ([`BridgeError`](super::BridgeError)), which is
//! also the one place a request is described for people (the requests themselves are
//! logged as values).

use std::fmt;

use async_trait::async_trait;
use nix::errno::Errno;

use crate::contract::FailureClass;
use crate::model::Vlan;
use ipnet::IpNet;

/// One link as the kernel reports it, with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    /// `IFLA_IFALIAS`; gitvisor keeps its ownership marker here.
    pub alias: Option<String>,
    /// `IFLA_INFO_KIND`; `None` for physical devices and loopback, which have no link
    /// info.
    pub kind: Option<LinkKind>,
    pub mtu: u32,
    /// Administrative state (`IFF_UP`), not carrier.
    pub up: bool,
    /// `IFLA_MASTER`: the bridge (or bond, VRF, …) this link is enslaved to.
    pub master: Option<u32>,
    /// Bridge options, present when `kind` is `bridge`.
    pub bridge: Option<BridgeOptions>,
    /// Every address on the link, with host bits as configured (`10.0.0.1/24`).
    pub addresses: Vec<IpNet>,
    /// Its 802.1Q membership on a bridge, sorted by id: a port's VLANs, or a bridge's
    /// own (`bridge vlan ... self`). Empty for links that are neither, and on kernels
    /// without bridge VLAN filtering.
    pub vlans: Vec<Vlan>,
    /// For a link of kind `vlan`: its VLAN id and the link it sits on (`IFLA_LINK`).
    pub vlan_of: Option<VlanOf>,
}

pub use crate::drivers::vlan_port::DEFAULT_VLAN;

/// What a link of kind `vlan` is: VLAN `id` of the link with index `parent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanOf {
    pub id: u16,
    pub parent: u32,
}

impl LinkState {
    pub fn is_bridge(&self) -> bool {
        self.kind == Some(LinkKind::Bridge)
    }
}

/// A link's `IFLA_INFO_KIND`: the bridges this driver manages, or any other kind as the
/// kernel names it (`veth`, `dummy`, `tun`, `bond`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Other(String),
}

impl LinkKind {
    /// The kind the kernel calls `name`.
    pub fn named(name: &str) -> Self {
        match name {
            "bridge" => LinkKind::Bridge,
            other => LinkKind::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkKind::Bridge => f.write_str("bridge"),
            LinkKind::Other(name) => f.write_str(name),
        }
    }
}

/// The bridge-specific options gitvisor manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgeOptions {
    /// Spanning tree on (kernel or user-space STP).
    pub stp: bool,
    pub vlan_filtering: bool,
}

/// One change to the host's links. Links are named by index except at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRequest {
    /// Create VLAN `id` on the link `parent` (a `vlan` link), administratively down.
    /// Answers the new link's index.
    CreateVlanLink {
        name: String,
        parent: u32,
        id: u16,
    },
    /// Put the bridge port `index` on `vlan`, or change its flags there (`pvid` moves the
    /// port VLAN id to it). `bridge_self`: `index` is the bridge itself, whose own
    /// membership lets its VLAN sub-interfaces see the VLAN.
    AddBridgeVlan {
        index: u32,
        vlan: Vlan,
        bridge_self: bool,
    },
    /// Take the bridge port (or, with `bridge_self`, the bridge) `index` off VLAN `id`.
    DelBridgeVlan {
        index: u32,
        id: u16,
        bridge_self: bool,
    },
    /// Create a bridge, administratively down. Answers the new link's index.
    CreateBridge {
        name: String,
        stp: bool,
        vlan_filtering: bool,
    },
    /// Set `ifalias` (the ownership marker).
    SetAlias {
        index: u32,
        alias: String,
    },
    /// Rename a link, which must be down. `EEXIST` when the name is taken.
    SetName {
        index: u32,
        name: String,
    },
    SetMtu {
        index: u32,
        mtu: u32,
    },
    SetUp {
        index: u32,
        up: bool,
    },
    /// Change bridge options; `None` leaves an option as it is.
    SetBridgeOptions {
        index: u32,
        stp: Option<bool>,
        vlan_filtering: Option<bool>,
    },
    AddAddress {
        index: u32,
        cidr: IpNet,
    },
    DelAddress {
        index: u32,
        cidr: IpNet,
    },
    /// Enslave `port_index` to `master`, or release it with `None`.
    SetMaster {
        port_index: u32,
        master: Option<u32>,
    },
    DeleteLink {
        index: u32,
    },
}

/// The kernel's (or the transport's) answer to a failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NetlinkError {
    /// The positive errno the kernel answered, when it answered one.
    pub errno: Option<i32>,
    pub message: String,
}

impl NetlinkError {
    /// An error the kernel answered with `errno` (positive, e.g. `Errno::EEXIST as i32`).
    pub fn from_errno(errno: i32) -> Self {
        NetlinkError {
            errno: Some(errno),
            message: std::io::Error::from_raw_os_error(errno).to_string(),
        }
    }

    /// A failure without an errno: the socket, a malformed answer, the transport.
    pub fn other(message: impl Into<String>) -> Self {
        NetlinkError {
            errno: None,
            message: message.into(),
        }
    }

    pub fn is_errno(&self, errno: Errno) -> bool {
        self.errno == Some(errno as i32)
    }

    /// Whether asking again can succeed. A permission, an invalid or unsupported value,
    /// a name that is too long: someone must act. A busy or vanished link, a race with
    /// another process, a full socket buffer, a transport failure: retry (the next plan
    /// starts from the truth).
    pub fn class(&self) -> FailureClass {
        let Some(errno) = self.errno else {
            return FailureClass::Transient;
        };
        match Errno::from_raw(errno) {
            Errno::EPERM
            | Errno::EACCES
            | Errno::EINVAL
            | Errno::ERANGE
            | Errno::EOPNOTSUPP
            | Errno::EAFNOSUPPORT
            | Errno::EPROTONOSUPPORT
            | Errno::ENAMETOOLONG
            | Errno::EMLINK
            | Errno::ELOOP => FailureClass::NeedsUser,
            _ => FailureClass::Transient,
        }
    }
}

/// The host as the bridge driver sees it. Implementations are shared by concurrent
/// `apply` tasks, so they are `Send + Sync` and take `&self`.
#[async_trait]
pub trait LinkSeam: Send + Sync {
    /// Every link, its addresses and its bridge VLANs: one link dump, one address dump
    /// and one bridge VLAN dump for the whole host, never one call per link.
    async fn dump(&self) -> Result<Vec<LinkState>, NetlinkError>;

    /// Carry out one request. Answers the new index for [`LinkRequest::CreateBridge`] and
    /// [`LinkRequest::CreateVlanLink`], `None` otherwise.
    async fn send(&self, request: LinkRequest) -> Result<Option<u32>, NetlinkError>;
}
