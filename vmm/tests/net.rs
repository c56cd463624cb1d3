//! End to end: a test guest's virtio-net driver sends a frame through the VMM's tap into
//! a Linux bridge, where a second tap on the same bridge sees it; the answer sent back
//! through the bridge reaches the guest. Everything happens in a network namespace this
//! test creates and deletes (needs root and `ip`).

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{PATIENCE, Vmm, build_guest, can_run};
use gitvisor_vmm::devices::virtio::net::open_tap;

/// A network namespace with a bridge and two taps, deleted on drop.
struct Namespace {
    name: String,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Namespace {
    fn new() -> Option<Namespace> {
        let name = format!("gvvmm-{}", std::process::id());
        let created = Command::new("ip").args(["netns", "add", &name]).output();
        if !created.is_ok_and(|output| output.status.success()) {
            return None;
        }
        let namespace = Namespace { name };
        let n = namespace.name.as_str();
        ip(&["-n", n, "link", "add", "br0", "type", "bridge"]);
        for tap in ["tapvm", "tapobs"] {
            ip(&["-n", n, "tuntap", "add", "dev", tap, "mode", "tap"]);
            ip(&["-n", n, "link", "set", tap, "master", "br0"]);
            ip(&["-n", n, "link", "set", tap, "up"]);
        }
        ip(&["-n", n, "link", "set", "br0", "up"]);
        Some(namespace)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const OBSERVER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x65, 0x43, 0x21];

#[test]
fn a_guest_frame_crosses_the_bridge_and_the_answer_comes_back() {
    if !can_run("a_guest_frame_crosses_the_bridge_and_the_answer_comes_back") {
        return;
    }
    let Some(namespace) = Namespace::new() else {
        common::skip(
            "a_guest_frame_crosses_the_bridge_and_the_answer_comes_back",
            "cannot create a network namespace (needs root and iproute2)",
        );
        return;
    };
    // The observer opens its tap from inside the namespace, on a thread of its own.
    let netns = namespace.name.clone();
    let observer = std::thread::spawn(move || -> Result<Vec<u8>, String> {
        let handle =
            std::fs::File::open(format!("/run/netns/{netns}")).map_err(|e| e.to_string())?;
        nix::sched::setns(handle, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| e.to_string())?;
        let mut tap = open_tap("tapobs").map_err(|e| e.to_string())?;
        let deadline = Instant::now() + PATIENCE;
        let mut frame = vec![0u8; 2048];
        loop {
            if Instant::now() > deadline {
                return Err("no frame from the guest on the bridge".into());
            }
            match tap.read(&mut frame) {
                Ok(len)
                    if len > 14 && frame[12..14] == [0x88, 0xb5] && frame[6..12] == GUEST_MAC =>
                {
                    let seen = frame[..len].to_vec();
                    let mut answer = Vec::new();
                    answer.extend_from_slice(&GUEST_MAC);
                    answer.extend_from_slice(&OBSERVER_MAC);
                    answer.extend_from_slice(&[0x88, 0xb5]);
                    answer.extend_from_slice(b"gitvisor-net-rx from the bridge");
                    tap.write_all(&answer).map_err(|e| e.to_string())?;
                    return Ok(seen);
                }
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => return Err(error.to_string()),
            }
        }
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let guest = build_guest("net", dir.path());
    // The VMM runs in the namespace, where its tap is.
    let mut vmm = Vmm::start_with(
        "ip",
        &["netns", "exec", &namespace.name, common::vmm_binary()],
        &guest,
        dir,
        &["--net", "tap=tapvm,mac=52:54:00:12:34:56"],
    );
    let seen = observer.join().expect("observer thread");
    let status = vmm.wait();
    let seen = seen.unwrap_or_else(|error| panic!("{error}; serial:\n{}", vmm.serial()));
    assert_eq!(&seen[..6], &[0xff; 6], "broadcast");
    assert_eq!(&seen[14..], b"gitvisor-net-tx");
    assert!(status.success(), "exit {status:?}; log:\n{}", vmm.log());
    assert_eq!(
        vmm.serial(),
        "mac: 0x52 0x54 0x0 0x12 0x34 0x56\nrx: gitvisor-net-rx from the bridge\n"
    );
    drop(namespace);
}
