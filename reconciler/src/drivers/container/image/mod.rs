//! Images: what a container's `image:` names, imported into a content-addressed store and
//! handed to the rootfs as overlayfs lower layers.
//!
//! An `image:` is one of:
//!
//! - an absolute path to an **OCI image layout** directory (it has `oci-layout`), a
//!   **docker-archive** directory, an **OCI archive** or **docker-archive** tarball
//!   (plain or gzipped: `docker save`, `skopeo copy … oci-archive:`/`docker-archive:`),
//!   optionally followed by `:TAG` to pick one image of several;
//! - an absolute path to any other directory: a **plain root file system**, used as the
//!   single lower layer in place (never copied; do not change it while containers use it);
//! - anything else: a **registry reference**, `[host[:port]/]repository[:tag][@sha256:…]`
//!   (see [`reference`] and [`registry`]).
//!
//! Everything that is not a plain directory goes through the [`store`]: every blob is
//! verified against its sha256 digest, every layer is unpacked once with the checks of
//! [`layer`] and shared by every image and container that uses it.

pub mod abandon;
pub mod beneath;
pub mod digest;
pub mod error;
pub mod gc;
pub mod layer;
pub mod reference;
pub mod registry;
pub mod store;

use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

pub use digest::Sha256Digest;
pub use error::ImageError;
pub use reference::{ImageRef, RegistryRef};
pub use store::ImageStore;

/// The most layers an image may have: every one is a lower layer of the container's
/// overlay mount, which stacks up to 500; deeper images are almost always a build
/// mistake, and each layer costs a descriptor and a lookup on every file access.
pub const MAX_LAYERS: usize = 128;

/// An image ready to be a container's root: its identity, its layer directories and the
/// defaults its config gives the process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedImage {
    /// `sha256:…` of the image config (the image id), or `dir:PATH` for a plain root file
    /// system.
    pub id: String,
    /// Layer directories, bottom first.
    pub lowers: Vec<PathBuf>,
    pub defaults: ImageDefaults,
}

/// What the image config says about the process, used where the manifest says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries, in the image's order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

impl ImageDefaults {
    pub fn from_config(config: &ImageConfiguration) -> Self {
        let Some(process) = config.config() else {
            return ImageDefaults::default();
        };
        ImageDefaults {
            entrypoint: process.entrypoint().clone().unwrap_or_default(),
            cmd: process.cmd().clone().unwrap_or_default(),
            env: process.env().clone().unwrap_or_default(),
            working_dir: process.working_dir().clone().filter(|d| !d.is_empty()),
            user: process.user().clone().filter(|u| !u.is_empty()),
        }
    }
}

/// Imports `image` (as declared) into `store` unless the store has it; blocking. A
/// store made with [`ImageStore::abandoned_by`] stops at its next read once abandoned.
pub fn prepare(store: &ImageStore, image: &str) -> Result<PreparedImage, ImageError> {
    // A collection of the store ([`gc`]) waits for this import, and this one for it.
    let _import = gc::ImportLock::take(store.root()).map_err(ImageError::io(
        image,
        "lock the image store at",
        store.root().join(gc::LOCK_FILE),
    ))?;
    let prepared = match ImageRef::parse(image)? {
        ImageRef::Local { path, tag } => prepare_local(store, image, &path, tag.as_deref()),
        ImageRef::Registry(reference) => registry::pull(store, image, &reference),
    };
    prepared.map_err(|error| {
        if store.is_abandoned() {
            ImageError::Abandoned {
                image: image.to_owned(),
                why: format!(
                    "its step was cancelled or ran past its deadline; it stopped at: {error}"
                ),
            }
        } else {
            error
        }
    })
}

fn prepare_local(
    store: &ImageStore,
    image: &str,
    path: &Path,
    tag: Option<&str>,
) -> Result<PreparedImage, ImageError> {
    let meta = std::fs::metadata(path).map_err(ImageError::io(image, "read", path))?;
    let key_file = if meta.is_dir() {
        if path.join("oci-layout").is_file() {
            path.join("index.json")
        } else if path.join("manifest.json").is_file() {
            path.join("manifest.json")
        } else if tag.is_some() {
            return Err(ImageError::NotFound {
                image: image.to_owned(),
                why: format!("{} is a plain directory, which has no tags", path.display()),
            });
        } else {
            return Ok(PreparedImage {
                id: format!("dir:{}", path.display()),
                lowers: vec![path.to_path_buf()],
                defaults: ImageDefaults::default(),
            });
        }
    } else if meta.is_file() {
        path.to_path_buf()
    } else {
        // A FIFO or a device would block the import or never end.
        return Err(ImageError::NotFound {
            image: image.to_owned(),
            why: format!(
                "{} is neither a directory nor a regular file (an archive)",
                path.display()
            ),
        });
    };
    let key = store::SourceKey::of(path, &key_file, tag);
    if let Some(cached) = key.as_ref().and_then(|key| store.cached(key)) {
        return Ok(cached);
    }
    let prepared = if meta.is_dir() {
        store
            .import_directory_image(image, path, tag)?
            .ok_or_else(|| ImageError::NotFound {
                image: image.to_owned(),
                why: format!("{} changed while it was read", path.display()),
            })?
    } else {
        store.import_archive(image, path, tag)?
    };
    if let Some(key) = &key {
        store.remember(key, &prepared);
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_path_that_is_a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("image.tar");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let image = fifo.to_str().unwrap().to_owned();
        let store = ImageStore::new(store_dir.path());
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(prepare(&store, &image).map(|_| ()));
        });
        let error = finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a FIFO is refused, not opened and waited on")
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("neither a directory nor a regular file"),
            "{error}"
        );
    }
}
