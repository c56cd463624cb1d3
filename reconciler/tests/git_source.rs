//! The git source against real repositories (the `git` CLI, served over `file://`): what
//! a commit checks out is the commit's content only. A committed symlink that leaves the
//! repository, as `--path` itself, as one of its parents or anywhere below it, rejects
//! the commit with an error naming the link and the commit, instead of loading a host
//! directory's manifests under the commit's SHA.

use std::path::Path;
use std::process::Command;

use gitvisor::source::{GitSource, SourceError};

const BRIDGE: &str =
    "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: br-host}\nspec: {}\n";

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=gitvisor tests",
            "-c",
            "user.email=tests@gitvisor.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git is a dependency of the git source; install it");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A repository whose one commit holds `links` (path, target) and a manifest at
/// `common/br.yaml`; and a host directory outside it with a manifest of its own.
struct Repo {
    _temp: tempfile::TempDir,
    url: String,
    host_dir: std::path::PathBuf,
    state: std::path::PathBuf,
}

fn repo(links: &[(&str, &str)]) -> Repo {
    let temp = tempfile::tempdir().unwrap();
    let host_dir = temp.path().join("host-dir");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("host.yaml"), BRIDGE).unwrap();
    let work = temp.path().join("repo");
    std::fs::create_dir_all(work.join("common")).unwrap();
    std::fs::create_dir_all(work.join("hosts/nuc1/deep/er")).unwrap();
    std::fs::write(work.join("common/br.yaml"), BRIDGE).unwrap();
    std::fs::write(work.join("hosts/nuc1/br.yaml"), BRIDGE).unwrap();
    git(&work, &["init", "--quiet"]);
    for (link, target) in links {
        let link = work.join(link);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let target = target.replace("@HOST", &host_dir.display().to_string());
        std::os::unix::fs::symlink(target, link).unwrap();
    }
    git(&work, &["add", "--all"]);
    git(&work, &["commit", "--quiet", "-m", "manifests"]);
    Repo {
        url: format!("file://{}", work.display()),
        host_dir,
        state: temp.path().join("state"),
        _temp: temp,
    }
}

async fn checkout(repo: &Repo, path: &str) -> Result<std::path::PathBuf, SourceError> {
    let source = GitSource::new(&repo.url, None, Some(Path::new(path)), &repo.state, None)?;
    let commit = source.fetch().await?;
    source.checkout(&commit).await.map(|checkout| checkout.dir)
}

fn assert_refused(result: Result<std::path::PathBuf, SourceError>, link: &str, repo: &Repo) {
    match result {
        Err(error) if error.to_string().contains(" is a symlink to ") => {
            let message = error.to_string();
            assert!(
                message.contains(&format!("{link} is a symlink to ")),
                "{message}"
            );
            assert!(message.contains("outside the repository"), "{message}");
            assert!(error.rejects_revision());
        }
        Ok(dir) => {
            let loaded = gitvisor::load::read_tree(&dir);
            panic!(
                "{link}: checked out {} and would load {} resources (host dir {})",
                dir.display(),
                loaded.resources.len(),
                repo.host_dir.display()
            );
        }
        Err(other) => panic!("{link}: unexpected error {other}"),
    }
}

#[tokio::test]
async fn a_path_that_is_a_symlink_out_of_the_repository_is_refused() {
    let repo = repo(&[("hosts/evil", "@HOST")]);
    assert_refused(checkout(&repo, "hosts/evil").await, "hosts/evil", &repo);
}

#[tokio::test]
async fn a_parent_of_the_path_that_is_a_symlink_out_of_the_repository_is_refused() {
    let repo = repo(&[("outer", "@HOST/..")]);
    assert_refused(checkout(&repo, "outer/host-dir").await, "outer", &repo);
}

#[tokio::test]
async fn a_symlink_out_of_the_repository_at_any_depth_below_the_path_is_refused() {
    for (link, target) in [
        ("hosts/nuc1/deep/er/more", "@HOST"),
        ("hosts/nuc1/deep/er/more.yaml", "@HOST/host.yaml"),
        ("hosts/nuc1/relative", "../../../../../host-dir"),
        ("hosts/nuc1/git.yaml", "../../.git/config"),
    ] {
        let repo = repo(&[(link, target)]);
        assert_refused(checkout(&repo, "hosts/nuc1").await, link, &repo);
    }
}

#[tokio::test]
async fn symlinks_inside_the_repository_are_content_and_load() {
    let repo = repo(&[
        ("hosts/nuc1/shared", "../../common"),
        ("hosts/alias", "nuc1"),
    ]);
    let dir = checkout(&repo, "hosts/alias").await.unwrap();
    assert!(dir.ends_with("hosts/alias"), "{}", dir.display());
    let whole = checkout(&repo, ".").await.unwrap();
    assert!(whole.is_dir());
}
