//! gitvisor's nftables table is listed again only when nftables changed (the ruleset
//! generation, `reconciler/src/drivers/network/generation.rs`), against the real kernel
//! and `nft` in a test namespace: every `nft` gitvisor runs goes through a wrapper that
//! logs its arguments, so the test sees which plans list the table and which reuse the
//! listing recorded in the run dir; a rule edited by hand, and a change to another
//! table, are still seen by the next plan.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use gitvisor_e2e::network::Lab;
use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest, change, non_noop_actions, run_command};

/// A `nft` that logs its arguments to `log`, then runs the real one.
struct NftLog {
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl NftLog {
    fn new() -> NftLog {
        let real = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("nft"))
            .find(|path| path.is_file())
            .or_else(|| Some(PathBuf::from("/usr/sbin/nft")).filter(|p| p.is_file()))
            .expect("nft is installed (the lab checked)");
        let dir = tempfile::Builder::new()
            .prefix("gv-e2e-nftlog-")
            .tempdir()
            .expect("a temporary directory");
        let log = dir.path().join("calls");
        let wrapper = dir.path().join("nft");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$*\" >>'{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            ),
        )
        .expect("the wrapper is written");
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
            .expect("the wrapper is executable");
        NftLog { dir, log }
    }

    /// The `nft` runs logged since the last call, and forgets them.
    fn take(&self) -> Vec<String> {
        let calls = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        calls.lines().map(str::to_owned).collect()
    }

    fn listings(&self) -> Vec<String> {
        self.take()
            .into_iter()
            .filter(|call| call.contains("list"))
            .collect()
    }

    /// `plan PATH --output json` with this `nft` first on PATH.
    fn plan(&self, env: &TestEnv, manifests: &Path) -> serde_json::Value {
        let mut command = env.gitvisor_command([
            OsStr::new("plan"),
            manifests.as_os_str(),
            OsStr::new("--output"),
            OsStr::new("json"),
        ]);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.dir.path().to_owned()];
        dirs.extend(std::env::split_paths(&path));
        command.env("PATH", std::env::join_paths(dirs).expect("a PATH"));
        run_command(command).expect_code(0).json()
    }
}

#[test]
fn the_table_is_listed_again_only_when_nftables_changed() {
    let Some(env) = TestEnv::new("nft-gen") else {
        return;
    };
    let Some(lab) = Lab::new(&env) else {
        return;
    };
    let manifests = Manifests::new();
    // Host-only: its rules are in gitvisor's table.
    manifests.write(
        "iso.yaml",
        &bridge_manifest("iso", &[], "  addresses: [10.9.0.1/24]\n"),
    );
    env.apply(manifests.path()).expect_code(0);
    let nft = NftLog::new();

    // Whatever the first plan lists is gitvisor's table only (the apply's own last
    // observation may already have recorded the listing at the generation it left).
    let plan = nft.plan(&env, manifests.path());
    assert_eq!(non_noop_actions(&plan), [], "{plan:#}");
    for listing in nft.listings() {
        assert_eq!(
            listing, "-j list table inet gitvisor",
            "only gitvisor's table is listed"
        );
    }

    // Nothing changed since: the recorded listing is used, `nft` does not run.
    let plan = nft.plan(&env, manifests.path());
    assert_eq!(non_noop_actions(&plan), [], "{plan:#}");
    assert_eq!(
        nft.take(),
        Vec::<String>::new(),
        "an unchanged ruleset is not listed again"
    );

    // A rule of the bridge edited by hand under its comment: the generation moved, the
    // table is listed again and the edit is drift.
    let listing = lab
        .nft(&["-a", "list", "table", "inet", "gitvisor"])
        .expect_code(0)
        .stdout;
    let mut chain = String::new();
    let mut edit = None;
    for line in listing.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("chain ") {
            chain = name.split_whitespace().next().unwrap_or("").to_owned();
        } else if let Some((body, handle)) = line.split_once(" # handle ")
            && body.contains("comment \"iso:")
            && (body.contains(" accept ") || body.contains(" drop "))
        {
            let flipped = if body.contains(" accept ") {
                body.replacen(" accept ", " drop ", 1)
            } else {
                body.replacen(" drop ", " accept ", 1)
            };
            edit = Some(format!(
                "replace rule inet gitvisor {chain} handle {handle} {flipped}"
            ));
            break;
        }
    }
    let edit = edit.unwrap_or_else(|| panic!("no accept or drop rule of iso in\n{listing}"));
    lab.nft(&[edit.as_str()]).expect_code(0);
    let plan = nft.plan(&env, manifests.path());
    assert_eq!(
        change(&plan, "Bridge", "iso")["action"],
        "update",
        "{plan:#}"
    );
    assert_eq!(nft.listings(), ["-j list table inet gitvisor"]);

    // Repaired; then a change to another table only: still listed again (the
    // generation counts every table's commits), and gitvisor's is still clean.
    env.apply(manifests.path()).expect_code(0);
    nft.plan(&env, manifests.path());
    nft.take();
    lab.nft(&["add", "table", "inet", "admins"]).expect_code(0);
    let plan = nft.plan(&env, manifests.path());
    assert_eq!(non_noop_actions(&plan), [], "{plan:#}");
    assert_eq!(nft.listings(), ["-j list table inet gitvisor"]);
    let plan = nft.plan(&env, manifests.path());
    assert_eq!(non_noop_actions(&plan), [], "{plan:#}");
    assert_eq!(nft.take(), Vec::<String>::new());
}
