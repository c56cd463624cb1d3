//! The content-addressed image store under the state dir, and imports into it.
//!
//! ```text
//! <state-dir>/containers/images/
//!   blobs/sha256/<hex>      manifests and image configs, verified against their digest
//!   layers/sha256/<hex>/    one directory per unpacked layer, named by its diff id (the
//!                           digest of the uncompressed tar), in overlayfs form
//!   sources/<hex>.json      what a local path resolved to last time (path, size, mtime,
//!                           inode → the image), so an unchanged archive is not read again
//!   tmp/                    work in progress; renamed into place when verified
//! ```
//!
//! # Order of steps of an import
//!
//! 1. Resolve the image's manifest (an OCI layout's `index.json`, a docker-archive's
//!    `manifest.json`, a registry's manifest endpoint) and read it, verifying its digest
//!    where something names it by digest.
//! 2. Read the config blob, verifying its digest; its `rootfs.diff_ids` name the layers.
//! 3. For every layer not in `layers/` yet: check the blob against the digest the
//!    manifest names *before* unpacking anything (a registry's blob is streamed through
//!    the hash into a file under `tmp/` first, no bigger than its descriptor says; a
//!    layout's blob is hashed where it is), then unpack it, hashing the uncompressed tar
//!    against the diff id the config names, into a fresh directory under `tmp/`, and
//!    rename that into place. A mismatch deletes the directory and fails the import:
//!    nothing unverified is ever under `layers/`. Layers are shared by every image that
//!    has them and unpacked once; concurrent imports of the same layer both unpack, and
//!    the second rename loses harmlessly.
//!
//! # Bounds
//!
//! An image has at most [`MAX_LAYERS`](super::MAX_LAYERS) layers, and unpacks to at most
//! `GITVISOR_IMAGE_MAX_UNPACKED_SIZE` (default [`DEFAULT_MAX_UNPACKED`], 64 GiB) of
//! uncompressed tar, counted as it is read: a gzip bomb stops there, a docker-archive
//! layer (which no compressed digest names) included. Files of a layout or archive are
//! read only as regular files inside it ([`super::beneath`]).
//!
//! Everything here is blocking file I/O; the driver calls it off the async runtime.

use std::cell::Cell;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use super::abandon::Abandon;
use super::beneath::{MAX_METADATA, SourceDir};
use super::digest::{HashingReader, Sha256Digest};
use super::error::ImageError;
use super::layer::LayerTarget;
use super::{ImageDefaults, PreparedImage};

/// Where blobs come from during an import: a local layout directory or a registry.
pub trait BlobSource {
    /// A reader over the blob's bytes, unverified (the store verifies them).
    fn open(&self, digest: &Sha256Digest) -> Result<Box<dyn Read + '_>, ImageError>;

    /// The blob as a file already on this host (a layout's), to hash in place rather
    /// than copy; `None` for a source that must stream it.
    fn local_file(&self, _digest: &Sha256Digest) -> Option<Result<fs::File, ImageError>> {
        None
    }
}

/// How much uncompressed tar one image may unpack to, unless configured otherwise.
pub const DEFAULT_MAX_UNPACKED: u64 = 64 << 30;

/// The environment variable that sets [`ImageStore`]'s bound on an image's unpacked size
/// (`64GiB`, `500MiB`, or bytes).
pub const MAX_UNPACKED_VARIABLE: &str = "GITVISOR_IMAGE_MAX_UNPACKED_SIZE";

/// How a layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    /// Decided by the first bytes (docker-archive layers carry no media type).
    Sniff,
}

/// The store at `root` (`<state-dir>/containers/images`).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    max_unpacked: u64,
    abandon: Abandon,
}

impl ImageStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ImageStore {
            root: root.into(),
            max_unpacked: DEFAULT_MAX_UNPACKED,
            abandon: Abandon::new(),
        }
    }

    /// The store at `root`, bounded by [`MAX_UNPACKED_VARIABLE`] when it is set (a value
    /// that is not a size is ignored with a warning).
    pub fn configured(root: impl Into<PathBuf>) -> Self {
        let mut store = ImageStore::new(root);
        if let Some(value) = std::env::var_os(MAX_UNPACKED_VARIABLE) {
            match value.to_string_lossy().parse::<crate::model::ByteSize>() {
                Ok(size) => store.max_unpacked = size.0,
                Err(why) => tracing::warn!(
                    "ignoring {MAX_UNPACKED_VARIABLE}={}: {why}; images may unpack to {DEFAULT_MAX_UNPACKED} bytes",
                    value.to_string_lossy()
                ),
            }
        }
        store
    }

    /// The same store, bounding an image's unpacked size to `bytes`.
    pub fn with_max_unpacked(mut self, bytes: u64) -> Self {
        self.max_unpacked = bytes;
        self
    }

    /// The same store, for one import that `abandon` can give up.
    pub fn abandoned_by(&self, abandon: &Abandon) -> Self {
        ImageStore {
            abandon: abandon.clone(),
            ..self.clone()
        }
    }

    pub fn is_abandoned(&self) -> bool {
        self.abandon.is_abandoned()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn layer_path(&self, diff_id: &Sha256Digest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }

    /// A fresh, empty directory under `tmp/`.
    pub fn scratch(&self, image: &str) -> Result<tempfile::TempDir, ImageError> {
        let tmp = self.root.join("tmp");
        fs::create_dir_all(&tmp).map_err(ImageError::io(image, "create", &tmp))?;
        tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&tmp)
            .map_err(ImageError::io(image, "create a directory in", &tmp))
    }

    /// Reads a blob from `source`, verifies it and keeps it in `blobs/`; answers its bytes.
    /// A blob already in the store is read from there (it was verified when it arrived).
    pub fn blob(
        &self,
        image: &str,
        what: &str,
        source: &dyn BlobSource,
        digest: &Sha256Digest,
    ) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest);
        if let Ok(bytes) = fs::read(&path)
            && Sha256Digest::of(&bytes) == *digest
        {
            return Ok(bytes);
        }
        let mut bytes = Vec::new();
        self.abandon
            .reader(source.open(digest)?)
            .take(MAX_METADATA + 1)
            .read_to_end(&mut bytes)
            .map_err(ImageError::io(image, "read the blob of", &path))?;
        if bytes.len() as u64 > MAX_METADATA {
            return Err(ImageError::format(
                image,
                what,
                format!("larger than {MAX_METADATA} bytes; not an image manifest or config"),
            ));
        }
        self.verify(image, what, digest, &Sha256Digest::of(&bytes))?;
        self.write_atomically(image, &path, &bytes)?;
        Ok(bytes)
    }

    /// Keeps `bytes` as a blob (a docker-archive config that has no digest to check
    /// against but its own); answers the digest.
    pub fn keep_blob(&self, image: &str, bytes: &[u8]) -> Result<Sha256Digest, ImageError> {
        let digest = Sha256Digest::of(bytes);
        let path = self.blob_path(&digest);
        if !path.exists() {
            self.write_atomically(image, &path, bytes)?;
        }
        Ok(digest)
    }

    fn write_atomically(&self, image: &str, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let parent = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(ImageError::io(image, "create", parent))?;
        let mut file = tempfile::NamedTempFile::new_in(parent).map_err(ImageError::io(
            image,
            "create a file in",
            parent,
        ))?;
        io::Write::write_all(&mut file, bytes).map_err(ImageError::io(image, "write", path))?;
        file.persist(path)
            .map_err(|e| ImageError::io(image, "write", path)(e.error))?;
        Ok(())
    }

    fn verify(
        &self,
        image: &str,
        what: &str,
        expected: &Sha256Digest,
        actual: &Sha256Digest,
    ) -> Result<(), ImageError> {
        if expected == actual {
            Ok(())
        } else {
            Err(ImageError::DigestMismatch {
                image: image.to_owned(),
                what: what.to_owned(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            })
        }
    }

    /// The layer blob `digest` from `source`, checked against its digest before
    /// anything reads it further: a local file is hashed where it is, a streamed one is
    /// copied through the hash into an unnamed file under `tmp/`, no further than the
    /// `size` its descriptor gives. Answers a reader at the blob's first byte.
    fn verified_layer_blob(
        &self,
        image: &str,
        source: &dyn BlobSource,
        digest: &Sha256Digest,
        size: u64,
    ) -> Result<Box<dyn Read>, ImageError> {
        let what = format!("layer {digest}");
        // One byte past the declared size tells "bigger than it says" from "as big"; a
        // compressed blob is never much bigger than what it unpacks to, so the unpacked
        // bound bounds it too (with room for gzip's framing).
        let most = self.max_unpacked.saturating_add(1 << 20);
        let limit = if size > 0 { size + 1 } else { u64::MAX }.min(most + 1);
        let read = |error| ImageError::io(image, "read the blob of", self.blob_path(digest))(error);
        let (mut file, (actual, count)) = match source.local_file(digest) {
            Some(file) => {
                let file = file?;
                let hashed = HashingReader::new(self.abandon.reader((&file).take(limit)))
                    .finish()
                    .map_err(read)?;
                (file, hashed)
            }
            None => {
                let tmp = self.root.join("tmp");
                fs::create_dir_all(&tmp).map_err(ImageError::io(image, "create", &tmp))?;
                let mut file = tempfile::tempfile_in(&tmp).map_err(ImageError::io(
                    image,
                    "create a file in",
                    &tmp,
                ))?;
                let mut hashing =
                    HashingReader::new(self.abandon.reader(source.open(digest)?.take(limit)));
                io::copy(&mut hashing, &mut file).map_err(read)?;
                (file, hashing.finish().map_err(read)?)
            }
        };
        if count > most {
            return Err(ImageError::TooLarge {
                image: image.to_owned(),
                what: what.clone(),
                limit: self.max_unpacked,
            });
        }
        if size > 0 && count > size {
            return Err(ImageError::format(
                image,
                what,
                format!("the blob is larger than the {size} bytes its descriptor gives"),
            ));
        }
        self.verify(image, &what, digest, &actual)?;
        io::Seek::rewind(&mut file).map_err(read)?;
        Ok(Box::new(file))
    }

    /// Unpacks one layer unless the store has it: `open` gives the (possibly compressed)
    /// bytes, already checked against the digest that names them when something does;
    /// `diff_id` is the digest the uncompressed tar must have. At most `budget` bytes of
    /// tar are read, and what was read is taken off it. Answers the layer directory.
    pub fn layer<'a>(
        &self,
        image: &str,
        diff_id: &Sha256Digest,
        compression: Compression,
        budget: &mut u64,
        open: impl FnOnce() -> Result<Box<dyn Read + 'a>, ImageError>,
    ) -> Result<PathBuf, ImageError> {
        let target = self.layer_path(diff_id);
        if target.is_dir() {
            return Ok(target);
        }
        let scratch = self.scratch(image)?;
        let root = scratch.path().join("layer");
        fs::create_dir(&root).map_err(ImageError::io(image, "create", &root))?;
        // The umask's mode would stand for the layer's `/` wherever the layer lists none.
        fs::set_permissions(
            &root,
            std::os::unix::fs::PermissionsExt::from_mode(super::layer::IMPLICIT_DIR_MODE),
        )
        .map_err(ImageError::io(image, "set the mode of", &root))?;
        let mut raw = BufReader::new(self.abandon.reader(open()?));
        let gzip = match compression {
            Compression::Gzip => true,
            Compression::None => false,
            Compression::Sniff => raw
                .fill_buf()
                .map_err(ImageError::io(image, "read layer", &root))?
                .starts_with(&[0x1f, 0x8b]),
        };
        let layer_name = diff_id.to_string();
        let limit = *budget;
        let mut unpack = |reader: &mut dyn Read| -> Result<Sha256Digest, ImageError> {
            let over = Cell::new(false);
            let mut tar = HashingReader::new(Bounded {
                inner: reader,
                left: limit,
                over: &over,
            });
            let unpacked = LayerTarget {
                image,
                layer: &layer_name,
                root: &root,
            }
            .unpack(&mut tar)
            .and_then(|()| {
                tar.finish()
                    .map_err(ImageError::io(image, "read layer", &root))
            });
            if over.get() {
                return Err(ImageError::TooLarge {
                    image: image.to_owned(),
                    what: format!("layer {diff_id}"),
                    limit: self.max_unpacked,
                });
            }
            let (digest, count) = unpacked?;
            *budget -= count;
            Ok(digest)
        };
        let actual_diff_id = if gzip {
            unpack(&mut flate2::bufread::GzDecoder::new(&mut raw))?
        } else {
            unpack(&mut raw)?
        };
        self.verify(
            image,
            &format!("the uncompressed layer {diff_id} (its diff id in the config)"),
            diff_id,
            &actual_diff_id,
        )?;
        let parent = target.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(ImageError::io(image, "create", parent))?;
        match fs::rename(&root, &target) {
            Ok(()) => Ok(target),
            // Another import of the same layer finished first: its copy is as good.
            Err(_) if target.is_dir() => Ok(target),
            Err(error) => Err(ImageError::io(image, "move the unpacked layer to", &target)(error)),
        }
    }

    /// Imports the image `manifest` names (already verified), with its config and
    /// layers from `source`.
    pub fn import_manifest(
        &self,
        image: &str,
        source: &dyn BlobSource,
        manifest: &ImageManifest,
    ) -> Result<PreparedImage, ImageError> {
        let config_digest = digest_of(image, "the config descriptor", manifest.config())?;
        let config_bytes = self.blob(image, "the image config", source, &config_digest)?;
        let config = ImageConfiguration::from_reader(&config_bytes[..])
            .map_err(|e| ImageError::format(image, "the image config", e))?;
        let diff_ids = diff_ids(image, &config)?;
        layer_count(image, diff_ids.len())?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::format(
                image,
                "the manifest",
                format!(
                    "it lists {} layers but the config's rootfs lists {}",
                    manifest.layers().len(),
                    diff_ids.len()
                ),
            ));
        }
        let mut lowers = Vec::with_capacity(diff_ids.len());
        let mut budget = self.max_unpacked;
        for (descriptor, diff_id) in manifest.layers().iter().zip(&diff_ids) {
            let digest = digest_of(image, "a layer descriptor", descriptor)?;
            let compression = compression_of(image, descriptor.media_type())?;
            lowers.push(self.layer(image, diff_id, compression, &mut budget, || {
                self.verified_layer_blob(image, source, &digest, descriptor.size())
            })?);
        }
        Ok(PreparedImage {
            id: config_digest.to_string(),
            lowers,
            defaults: ImageDefaults::from_config(&config),
        })
    }

    /// Imports from an OCI image layout directory; `tag` picks a manifest by its
    /// `org.opencontainers.image.ref.name` when the index has several.
    pub fn import_layout(
        &self,
        image: &str,
        dir: &Path,
        tag: Option<&str>,
    ) -> Result<PreparedImage, ImageError> {
        let files = SourceDir { image, root: dir };
        let header: serde_json::Value = serde_json::from_slice(&files.read_metadata("oci-layout")?)
            .map_err(|e| ImageError::format(image, "oci-layout", e))?;
        if header.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(ImageError::Unsupported {
                image: image.to_owned(),
                what: "the OCI layout".into(),
                why: format!(
                    "imageLayoutVersion {} (1.0.0 is read)",
                    header["imageLayoutVersion"]
                ),
            });
        }
        let index = ImageIndex::from_reader(&files.read_metadata("index.json")?[..])
            .map_err(|e| ImageError::format(image, "index.json", e))?;
        let source = LayoutBlobs { dir, image };
        let descriptor = pick_manifest(image, index.manifests(), tag)?;
        let manifest = self.manifest(image, &source, descriptor)?;
        self.import_manifest(image, &source, &manifest)
    }

    /// The image manifest `descriptor` names, following an index (a multi-platform
    /// image) to this host's platform.
    pub fn manifest(
        &self,
        image: &str,
        source: &dyn BlobSource,
        descriptor: &Descriptor,
    ) -> Result<ImageManifest, ImageError> {
        let mut descriptor = descriptor.clone();
        for _ in 0..4 {
            let digest = digest_of(image, "a manifest descriptor", &descriptor)?;
            let bytes = self.blob(image, "the manifest", source, &digest)?;
            if is_index(descriptor.media_type(), &bytes) {
                let index = ImageIndex::from_reader(&bytes[..])
                    .map_err(|e| ImageError::format(image, "the image index", e))?;
                descriptor = pick_platform(image, index.manifests())?.clone();
                continue;
            }
            return ImageManifest::from_reader(&bytes[..])
                .map_err(|e| ImageError::format(image, "the image manifest", e));
        }
        Err(ImageError::format(
            image,
            "the image index",
            "indexes nest more than 4 deep",
        ))
    }

    /// Imports from a docker-archive directory (`docker save` / `skopeo copy
    /// docker-archive:` output, unpacked): `manifest.json` names the config and the
    /// layer tars; each layer is verified against the config's diff ids.
    pub fn import_docker(
        &self,
        image: &str,
        dir: &Path,
        tag: Option<&str>,
    ) -> Result<PreparedImage, ImageError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let files = SourceDir { image, root: dir };
        let entries: Vec<Entry> = serde_json::from_slice(&files.read_metadata("manifest.json")?)
            .map_err(|e| ImageError::format(image, "manifest.json", e))?;
        let entry = match (tag, entries.len()) {
            (_, 0) => {
                return Err(ImageError::format(
                    image,
                    "manifest.json",
                    "it lists no image",
                ));
            }
            (None, 1) => &entries[0],
            (None, n) => {
                return Err(ImageError::NotFound {
                    image: image.to_owned(),
                    why: format!("the archive holds {n} images; name one with PATH:TAG"),
                });
            }
            (Some(tag), _) => entries
                .iter()
                .find(|e| {
                    e.repo_tags
                        .iter()
                        .flatten()
                        .any(|t| t == tag || t.rsplit_once(':').is_some_and(|(_, t)| t == tag))
                })
                .ok_or_else(|| ImageError::NotFound {
                    image: image.to_owned(),
                    why: format!("the archive has no image tagged {tag}"),
                })?,
        };
        let config_bytes = files.read_metadata(&entry.config)?;
        let config_digest = Sha256Digest::of(&config_bytes);
        // `<hex>.json` (docker, skopeo) or `blobs/sha256/<hex>` (docker 25+) name the
        // config by its digest: hold them to it.
        let named = Path::new(&entry.config)
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.trim_end_matches(".json"))
            .and_then(|hex| Sha256Digest::from_hex(hex).ok());
        if let Some(named) = named {
            self.verify(image, "the image config", &named, &config_digest)?;
        }
        self.keep_blob(image, &config_bytes)?;
        let config = ImageConfiguration::from_reader(&config_bytes[..])
            .map_err(|e| ImageError::format(image, "the image config", e))?;
        let diff_ids = diff_ids(image, &config)?;
        layer_count(image, diff_ids.len())?;
        if diff_ids.len() != entry.layers.len() {
            return Err(ImageError::format(
                image,
                "manifest.json",
                format!(
                    "it lists {} layers but the config's rootfs lists {}",
                    entry.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let mut lowers = Vec::with_capacity(diff_ids.len());
        let mut budget = self.max_unpacked;
        for (layer, diff_id) in entry.layers.iter().zip(&diff_ids) {
            lowers.push(
                self.layer(image, diff_id, Compression::Sniff, &mut budget, || {
                    Ok(Box::new(files.open(layer)?) as Box<dyn Read>)
                })?,
            );
        }
        Ok(PreparedImage {
            id: config_digest.to_string(),
            lowers,
            defaults: ImageDefaults::from_config(&config),
        })
    }

    /// Imports an archive file (an OCI archive or a docker-archive, plain or gzipped):
    /// unpacked under `tmp/` with the same checks as a layer, then read as a directory.
    pub fn import_archive(
        &self,
        image: &str,
        file: &Path,
        tag: Option<&str>,
    ) -> Result<PreparedImage, ImageError> {
        let scratch = self.scratch(image)?;
        let root = scratch.path().join("archive");
        fs::create_dir(&root).map_err(ImageError::io(image, "create", &root))?;
        let opened = fs::File::open(file).map_err(ImageError::io(image, "open", file))?;
        let mut reader = BufReader::new(self.abandon.reader(opened));
        let gzip = reader
            .fill_buf()
            .map_err(ImageError::io(image, "read", file))?
            .starts_with(&[0x1f, 0x8b]);
        let target = LayerTarget {
            image,
            layer: "(the archive itself)",
            root: &root,
        };
        // The archive holds the layers: it may unpack to what they may, and a little.
        let over = Cell::new(false);
        let limit = self.max_unpacked.saturating_add(MAX_METADATA * 4);
        let unpacked = if gzip {
            target.unpack(Bounded {
                inner: flate2::bufread::GzDecoder::new(reader),
                left: limit,
                over: &over,
            })
        } else {
            target.unpack(Bounded {
                inner: reader,
                left: limit,
                over: &over,
            })
        };
        if over.get() {
            return Err(ImageError::TooLarge {
                image: image.to_owned(),
                what: format!("the archive {}", file.display()),
                limit,
            });
        }
        unpacked?;
        self.import_directory_image(image, &root, tag)?
            .ok_or_else(|| ImageError::NotFound {
                image: image.to_owned(),
                why: format!(
                    "{} is neither an OCI archive (no oci-layout) nor a docker-archive (no manifest.json)",
                    file.display()
                ),
            })
    }

    /// A layout or docker-archive directory, or `None` when `dir` is neither (then it
    /// is a plain root file system).
    pub fn import_directory_image(
        &self,
        image: &str,
        dir: &Path,
        tag: Option<&str>,
    ) -> Result<Option<PreparedImage>, ImageError> {
        // Present in any form: reading it says what is wrong with one that is not a
        // regular file of the directory.
        let has = |name: &str| fs::symlink_metadata(dir.join(name)).is_ok();
        if has("oci-layout") {
            return self.import_layout(image, dir, tag).map(Some);
        }
        if has("manifest.json") {
            return self.import_docker(image, dir, tag).map(Some);
        }
        Ok(None)
    }

    /// What `path` resolved to last time, when the file (or layout index) is unchanged
    /// and every layer is still in the store.
    pub fn cached(&self, key: &SourceKey) -> Option<PreparedImage> {
        let text = fs::read_to_string(self.source_record(key)).ok()?;
        let record: SourceRecord = serde_json::from_str(&text).ok()?;
        (record.key == *key && record.image.lowers.iter().all(|l| l.is_dir()))
            .then_some(record.image)
    }

    /// Remembers what `key` resolved to (best effort: a failure only costs a re-import).
    pub fn remember(&self, key: &SourceKey, image: &PreparedImage) {
        let record = SourceRecord {
            key: key.clone(),
            image: image.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec(&record) {
            let path = self.source_record(key);
            if let Err(error) = self.write_atomically("", &path, &bytes) {
                tracing::debug!(path = %path.display(), "not caching an image source: {error}");
            }
        }
    }

    fn source_record(&self, key: &SourceKey) -> PathBuf {
        let name = Sha256Digest::of(key.path.as_os_str().as_encoded_bytes());
        self.root
            .join("sources")
            .join(format!("{}.json", name.hex()))
    }
}

/// Passes at most `left` bytes through; reading past them fails and sets `over`.
struct Bounded<'a, R> {
    inner: R,
    left: u64,
    over: &'a Cell<bool>,
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // At the bound: only the end of the stream may follow.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.over.set(true);
                    Err(io::Error::other("more bytes than an image may unpack to"))
                }
            };
        }
        let most = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..most])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Identifies the state of a local image source: when none of this changed, neither did
/// the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceKey {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
    pub tag: Option<String>,
}

impl SourceKey {
    /// The key of `file` (an archive, or a layout's `index.json`).
    pub fn of(path: &Path, file: &Path, tag: Option<&str>) -> Option<SourceKey> {
        let meta = fs::metadata(file).ok()?;
        Some(SourceKey {
            path: path.to_path_buf(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            inode: meta.ino(),
            tag: tag.map(str::to_owned),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SourceRecord {
    key: SourceKey,
    image: PreparedImage,
}

/// Blobs of an OCI layout directory.
struct LayoutBlobs<'a> {
    dir: &'a Path,
    image: &'a str,
}

impl LayoutBlobs<'_> {
    fn file(&self, digest: &Sha256Digest) -> Result<fs::File, ImageError> {
        SourceDir {
            image: self.image,
            root: self.dir,
        }
        .open(&format!("blobs/sha256/{}", digest.hex()))
    }
}

impl BlobSource for LayoutBlobs<'_> {
    fn open(&self, digest: &Sha256Digest) -> Result<Box<dyn Read + '_>, ImageError> {
        Ok(Box::new(self.file(digest)?))
    }

    fn local_file(&self, digest: &Sha256Digest) -> Option<Result<fs::File, ImageError>> {
        Some(self.file(digest))
    }
}

/// Refuses an image with more layers than a container's root file system stacks.
fn layer_count(image: &str, layers: usize) -> Result<(), ImageError> {
    if layers > super::MAX_LAYERS {
        return Err(ImageError::Unsupported {
            image: image.to_owned(),
            what: format!("an image of {layers} layers"),
            why: format!(
                "a container stacks at most {} layers; rebuild the image with fewer (squash some)",
                super::MAX_LAYERS
            ),
        });
    }
    Ok(())
}

pub(crate) fn digest_of(
    image: &str,
    what: &str,
    descriptor: &Descriptor,
) -> Result<Sha256Digest, ImageError> {
    descriptor
        .digest()
        .to_string()
        .parse()
        .map_err(|why: String| ImageError::format(image, what, why))
}

fn diff_ids(image: &str, config: &ImageConfiguration) -> Result<Vec<Sha256Digest>, ImageError> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|id| {
            id.parse().map_err(|why: String| {
                ImageError::format(image, "the config's rootfs.diff_ids", why)
            })
        })
        .collect()
}

fn compression_of(image: &str, media_type: &MediaType) -> Result<Compression, ImageError> {
    let name = media_type.to_string();
    match media_type {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Ok(Compression::None),
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
            Ok(Compression::Gzip)
        }
        _ if name == "application/vnd.docker.image.rootfs.diff.tar.gzip"
            || name == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" =>
        {
            Ok(Compression::Gzip)
        }
        _ if name == "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        _ => Err(ImageError::Unsupported {
            image: image.to_owned(),
            what: format!("layer media type {name}"),
            why: "gitvisor reads tar and tar+gzip layers (not zstd)".into(),
        }),
    }
}

fn is_index(media_type: &MediaType, bytes: &[u8]) -> bool {
    let name = media_type.to_string();
    if *media_type == MediaType::ImageIndex
        || name == "application/vnd.docker.distribution.manifest.list.v2+json"
    {
        return true;
    }
    // Some writers leave the descriptor's media type generic: look inside.
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .is_some_and(|v| v.get("manifests").is_some() && v.get("layers").is_none())
}

/// This host's platform, as OCI names it.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn pick_platform<'a>(
    image: &str,
    manifests: &'a [Descriptor],
) -> Result<&'a Descriptor, ImageError> {
    let architecture = host_architecture();
    manifests
        .iter()
        .find(|d| {
            d.platform().as_ref().is_none_or(|p| {
                p.architecture().to_string() == architecture && p.os().to_string() == "linux"
            })
        })
        .ok_or_else(|| ImageError::NotFound {
            image: image.to_owned(),
            why: format!("the image has no variant for linux/{architecture}"),
        })
}

/// The manifest of an OCI layout's index: the one tagged `tag`, or the only one.
fn pick_manifest<'a>(
    image: &str,
    manifests: &'a [Descriptor],
    tag: Option<&str>,
) -> Result<&'a Descriptor, ImageError> {
    const REF_NAME: &str = "org.opencontainers.image.ref.name";
    let tag_of = |d: &Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned()
    };
    match tag {
        Some(tag) => manifests
            .iter()
            .find(|d| tag_of(d).as_deref() == Some(tag))
            .ok_or_else(|| ImageError::NotFound {
                image: image.to_owned(),
                why: format!(
                    "the layout has no manifest tagged {tag} (it has: {})",
                    manifests
                        .iter()
                        .filter_map(tag_of)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        None if manifests.len() == 1 => Ok(&manifests[0]),
        None if manifests.is_empty() => Err(ImageError::NotFound {
            image: image.to_owned(),
            why: "the layout's index.json lists no manifest".into(),
        }),
        None => Err(ImageError::NotFound {
            image: image.to_owned(),
            why: format!(
                "the layout holds {} manifests; name one with PATH:TAG",
                manifests.len()
            ),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    /// A tar holding `files` (regular, mode 0644, owned by root).
    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            tar.append_data(&mut header, name, *data).unwrap();
        }
        tar.into_inner().unwrap()
    }

    /// Writes an OCI layout with one gzipped layer holding `files`; answers the layer's
    /// blob path.
    pub(crate) fn layout(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
        layout_of_layers(dir, &[files]).remove(0)
    }

    /// Writes an OCI layout tagged `v1` with one gzipped layer per entry of `layers`;
    /// answers the layers' blob paths.
    fn layout_of_layers(dir: &Path, layers: &[&[(&str, &[u8])]]) -> Vec<PathBuf> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let digest = Sha256Digest::of(bytes);
            fs::write(blobs.join(digest.hex()), bytes).unwrap();
            digest
        };
        let mut diff_ids = Vec::new();
        let mut descriptors = Vec::new();
        let mut paths = Vec::new();
        for files in layers {
            let layer_tar = tar_of(files);
            diff_ids.push(Sha256Digest::of(&layer_tar).to_string());
            let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gzip.write_all(&layer_tar).unwrap();
            let layer = gzip.finish().unwrap();
            let digest = put(&layer);
            descriptors.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest.to_string(), "size": layer.len()}));
            paths.push(blobs.join(digest.hex()));
        }
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/app"], "Env": ["A=1"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = put(&config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
            "layers": descriptors,
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let manifest_digest = put(&manifest);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest.to_string(), "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "v1"}}],
        });
        fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        paths
    }

    /// Where the child of [`a_layers_root_and_unlisted_parents_are_0755_under_umask_077`]
    /// keeps its store.
    const UMASK_CHILD_DIR: &str = "GITVISOR_TEST_IMAGE_UMASK_CHILD_DIR";

    /// A root shell with `umask 077` imports an image whose layer lists `bin/app` but not
    /// `bin/`: the layer's `/` and `bin/` are 0755 (a non-root container must traverse
    /// them), not the umask's 0700. The import runs in a child under that umask (the
    /// umask is the whole process's).
    #[test]
    fn a_layers_root_and_unlisted_parents_are_0755_under_umask_077() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let test_binary = std::env::current_exe().unwrap();
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"umask 077 && exec "$0" --exact drivers::container::image::store::tests::umask_077_import --ignored --test-threads 1"#)
            .arg(&test_binary)
            .env(UMASK_CHILD_DIR, dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let image = ImageStore::new(dir.path().join("store"))
            .import_layout("app", &dir.path().join("source"), Some("v1"))
            .unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&image.lowers[0]), 0o755, "the layer's /");
        assert_eq!(mode(&image.lowers[0].join("bin")), 0o755, "bin/");
        assert_eq!(mode(&image.lowers[0].join("bin/app")), 0o644, "as listed");
    }

    #[test]
    #[ignore = "the child of a_layers_root_and_unlisted_parents_are_0755_under_umask_077"]
    fn umask_077_import() {
        let Some(dir) = std::env::var_os(UMASK_CHILD_DIR).map(PathBuf::from) else {
            return;
        };
        layout(&dir.join("source"), &[("bin/app", b"#!/bin/sh\n")]);
        ImageStore::new(dir.join("store"))
            .import_layout("app", &dir.join("source"), Some("v1"))
            .unwrap();
    }

    #[test]
    fn a_layout_imports_once_and_its_layers_are_shared() {
        let source = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let layer_blob = layout(source.path(), &[("bin/app", b"#!/bin/sh\n")]);
        let store = ImageStore::new(store_dir.path());
        let image = store
            .import_layout("app", source.path(), Some("v1"))
            .unwrap();
        assert_eq!(image.lowers.len(), 1);
        assert_eq!(
            fs::read(image.lowers[0].join("bin/app")).unwrap(),
            b"#!/bin/sh\n"
        );
        assert_eq!(image.defaults.cmd, ["/bin/app"]);
        assert_eq!(image.defaults.env, ["A=1"]);
        // Unpacked once: the layer blob is not read again.
        fs::remove_file(&layer_blob).unwrap();
        let again = store.import_layout("app", source.path(), None).unwrap();
        assert_eq!(again, image);
        let missing = store
            .import_layout("app", source.path(), Some("v9"))
            .unwrap_err();
        assert!(
            missing.to_string().contains("no manifest tagged v9"),
            "{missing}"
        );
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_is_refused_and_nothing_is_kept() {
        let source = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let layer_blob = layout(source.path(), &[("bin/app", &[7u8; 4096])]);
        let mut bytes = fs::read(&layer_blob).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&layer_blob, bytes).unwrap();
        let store = ImageStore::new(store_dir.path());
        let error = store.import_layout("app", source.path(), None).unwrap_err();
        assert!(
            matches!(error, ImageError::DigestMismatch { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("should have digest"));
        let layers = store_dir.path().join("layers/sha256");
        assert_eq!(fs::read_dir(&layers).map(|d| d.count()).unwrap_or(0), 0);
    }

    #[test]
    fn a_config_naming_another_diff_id_is_refused() {
        let source = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        layout(source.path(), &[("a", b"a")]);
        // Re-point the config at a different diff id, keeping every blob digest right.
        let other = tempfile::tempdir().unwrap();
        layout(other.path(), &[("b", b"b")]);
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(source.path().join("index.json")).unwrap()).unwrap();
        let manifest_digest: Sha256Digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let blobs = source.path().join("blobs/sha256");
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(blobs.join(manifest_digest.hex())).unwrap()).unwrap();
        let config_digest: Sha256Digest = manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(blobs.join(config_digest.hex())).unwrap()).unwrap();
        config["rootfs"]["diff_ids"][0] = serde_json::json!(Sha256Digest::of(b"else").to_string());
        let config = serde_json::to_vec(&config).unwrap();
        let new_config = Sha256Digest::of(&config);
        fs::write(blobs.join(new_config.hex()), &config).unwrap();
        let mut manifest = manifest;
        manifest["config"]["digest"] = serde_json::json!(new_config.to_string());
        manifest["config"]["size"] = serde_json::json!(config.len());
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let new_manifest = Sha256Digest::of(&manifest);
        fs::write(blobs.join(new_manifest.hex()), &manifest).unwrap();
        let mut index = index;
        index["manifests"][0]["digest"] = serde_json::json!(new_manifest.to_string());
        index["manifests"][0]["size"] = serde_json::json!(manifest.len());
        fs::write(
            source.path().join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        let error = ImageStore::new(store_dir.path())
            .import_layout("app", source.path(), None)
            .unwrap_err();
        assert!(error.to_string().contains("diff id"), "{error}");
    }

    /// One member of a test archive.
    enum Member<'a> {
        File(&'a str, &'a [u8]),
        Symlink(&'a str, &'a str),
    }

    /// Writes a tar of `members` to `path`.
    fn archive(path: &Path, members: &[Member]) {
        let mut tar = tar::Builder::new(Vec::new());
        for member in members {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match member {
                Member::File(name, data) => {
                    header.set_size(data.len() as u64);
                    header.set_cksum();
                    tar.append_data(&mut header, name, *data).unwrap();
                }
                Member::Symlink(name, target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    tar.append_link(&mut header, name, target).unwrap();
                }
            }
        }
        fs::write(path, tar.into_inner().unwrap()).unwrap();
    }

    /// A docker-archive's `manifest.json` and config for `layers` (file names in the
    /// archive, and the tar each holds).
    fn docker_metadata(layers: &[(&str, &[u8])]) -> (Vec<u8>, Vec<u8>) {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|(_, tar)| Sha256Digest::of(tar).to_string())
            .collect();
        let layers: Vec<&str> = layers.iter().map(|(name, _)| *name).collect();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/app"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let manifest =
            serde_json::json!([{"Config": "cfg.json", "RepoTags": ["app:v1"], "Layers": layers}]);
        (
            serde_json::to_vec(&manifest).unwrap(),
            serde_json::to_vec(&config).unwrap(),
        )
    }

    fn refused_entry(error: &ImageError) -> &str {
        match error {
            ImageError::Unsafe { entry, .. } => entry,
            other => panic!("expected an unsafe entry, got: {other}"),
        }
    }

    #[test]
    fn archive_members_linking_out_of_the_archive_are_refused_by_name() {
        let host = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(store_dir.path());
        let layer_tar = tar_of(&[("app", b"archive file\n")]);
        // A host tar (whose diff id the config names), and a host layout.
        let secret_tar = tar_of(&[("secret", b"host file\n")]);
        let host_tar = host.path().join("host.tar");
        fs::write(&host_tar, &secret_tar).unwrap();
        let host_layout = host.path().join("layout");
        fs::create_dir(&host_layout).unwrap();
        layout(&host_layout, &[("secret", b"host file\n")]);

        let (manifest, config) =
            docker_metadata(&[("layer.tar", &layer_tar), ("l2.tar", &secret_tar)]);
        let l2 = host.path().join("l2.tar.archive");
        archive(
            &l2,
            &[
                Member::File("manifest.json", &manifest),
                Member::File("cfg.json", &config),
                Member::File("layer.tar", &layer_tar),
                Member::Symlink("l2.tar", host_tar.to_str().unwrap()),
            ],
        );
        let error = store.import_archive("l2", &l2, None).unwrap_err();
        assert_eq!(refused_entry(&error), "l2.tar", "{error}");
        assert!(error.to_string().contains("\"l2.tar\""), "{error}");

        let index = fs::read(host_layout.join("index.json")).unwrap();
        let blobs = host.path().join("blobs.archive");
        archive(
            &blobs,
            &[
                Member::File("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
                Member::File("index.json", &index),
                Member::Symlink("blobs", host_layout.join("blobs").to_str().unwrap()),
            ],
        );
        let error = store.import_archive("blobs", &blobs, None).unwrap_err();
        assert!(
            refused_entry(&error).starts_with("blobs/sha256/"),
            "{error}"
        );

        // A link that stays inside the archive is an entry of it (`docker save` links a
        // repeated layer to its first copy).
        let (manifest, config) =
            docker_metadata(&[("layer.tar", &layer_tar), ("dup/layer.tar", &layer_tar)]);
        let inside = host.path().join("inside.archive");
        archive(
            &inside,
            &[
                Member::File("manifest.json", &manifest),
                Member::File("cfg.json", &config),
                Member::File("layer.tar", &layer_tar),
                Member::Symlink("dup/layer.tar", "../layer.tar"),
            ],
        );
        let image = store.import_archive("inside", &inside, None).unwrap();
        assert_eq!(image.lowers.len(), 2);
        assert_eq!(
            fs::read(image.lowers[1].join("app")).unwrap(),
            b"archive file\n"
        );
        // Nothing refused was kept.
        let layers = store_dir.path().join("layers/sha256");
        assert_eq!(fs::read_dir(&layers).unwrap().count(), 1);
    }

    #[test]
    fn archive_members_naming_devices_or_huge_host_files_are_refused_at_once() {
        let host = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(store_dir.path());
        let layer_tar = tar_of(&[("a", b"a")]);
        let (manifest, config) = docker_metadata(&[("layer.tar", &layer_tar)]);
        let sparse = host.path().join("sparse");
        fs::File::create(&sparse).unwrap().set_len(8 << 30).unwrap();
        let sparse = sparse.to_str().unwrap();
        let cases: [(&str, Vec<Member>); 3] = [
            (
                "cfg.json",
                vec![
                    Member::File("manifest.json", &manifest),
                    Member::Symlink("cfg.json", "/dev/zero"),
                    Member::File("layer.tar", &layer_tar),
                ],
            ),
            (
                "manifest.json",
                vec![
                    Member::Symlink("manifest.json", sparse),
                    Member::File("cfg.json", &config),
                    Member::File("layer.tar", &layer_tar),
                ],
            ),
            (
                "layer.tar",
                vec![
                    Member::File("manifest.json", &manifest),
                    Member::File("cfg.json", &config),
                    Member::Symlink("layer.tar", "/dev/zero"),
                ],
            ),
        ];
        for (entry, members) in cases {
            let path = host.path().join(format!("{entry}.archive"));
            archive(&path, &members);
            let began = std::time::Instant::now();
            let error = store.import_archive(entry, &path, None).unwrap_err();
            assert_eq!(refused_entry(&error), entry, "{error}");
            assert!(began.elapsed() < std::time::Duration::from_secs(5));
        }
    }

    #[test]
    fn a_layout_directory_is_read_without_following_links_out_of_it() {
        let source = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let layer_blob = layout(source.path(), &[("bin/app", b"layout\n")]);
        // The layer blob now lives outside the layout, linked from it.
        let outside = host.path().join("blob");
        fs::rename(&layer_blob, &outside).unwrap();
        std::os::unix::fs::symlink(&outside, &layer_blob).unwrap();
        let error = ImageStore::new(store_dir.path())
            .import_layout("app", source.path(), None)
            .unwrap_err();
        let entry = refused_entry(&error);
        assert!(entry.starts_with("blobs/sha256/"), "{error}");
        assert!(error.to_string().contains("outside the image"), "{error}");
    }

    #[test]
    fn metadata_files_are_read_up_to_a_bound() {
        let source = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        fs::File::create(source.path().join("manifest.json"))
            .unwrap()
            .set_len(8 << 30)
            .unwrap();
        let began = std::time::Instant::now();
        let error = ImageStore::new(store_dir.path())
            .import_docker("app", source.path(), None)
            .unwrap_err();
        assert!(
            matches!(&error, ImageError::Format { what, .. } if what == "manifest.json"),
            "{error}"
        );
        assert!(error.to_string().contains("larger than 4 MiB"), "{error}");
        assert!(began.elapsed() < std::time::Duration::from_secs(5));
    }

    /// Serves a layout's blobs, but another layer's bytes for `swapped`, and notes
    /// whether anything was unpacked under `tmp/` by the time those bytes ran out.
    struct SwappingSource<'a> {
        blobs: LayoutBlobs<'a>,
        swapped: Sha256Digest,
        replacement: Vec<u8>,
        tmp: PathBuf,
        unpacked_before_the_end: Cell<Option<bool>>,
    }

    struct AtEnd<'a> {
        bytes: &'a [u8],
        source: &'a SwappingSource<'a>,
    }

    impl Read for AtEnd<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.bytes.read(buf)?;
            if n == 0 && self.source.unpacked_before_the_end.get().is_none() {
                let unpacked = fs::read_dir(&self.source.tmp)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|dir| {
                        fs::read_dir(dir.path().join("layer")).is_ok_and(|mut d| d.next().is_some())
                    });
                self.source.unpacked_before_the_end.set(Some(unpacked));
            }
            Ok(n)
        }
    }

    impl BlobSource for SwappingSource<'_> {
        fn open(&self, digest: &Sha256Digest) -> Result<Box<dyn Read + '_>, ImageError> {
            if *digest == self.swapped {
                return Ok(Box::new(AtEnd {
                    bytes: &self.replacement,
                    source: self,
                }));
            }
            self.blobs.open(digest)
        }
    }

    #[test]
    fn a_layer_blob_is_checked_against_its_digest_before_it_is_unpacked() {
        let source = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        // Incompressible, so the named blob is bigger than the one served in its place.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..256 << 10)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let layer_blob = layout(source.path(), &[("bin/app", &noise)]);
        // A bomb, as far as this test goes: a valid gzip layer, but not the one named.
        let big = vec![0u8; 8 << 20];
        let replacement = fs::read(layout(other.path(), &[("zeros", &big)])).unwrap();
        let swapped =
            Sha256Digest::from_hex(layer_blob.file_name().unwrap().to_str().unwrap()).unwrap();
        let store = ImageStore::new(store_dir.path());
        let source = SwappingSource {
            blobs: LayoutBlobs {
                dir: source.path(),
                image: "app",
            },
            swapped: swapped.clone(),
            replacement,
            tmp: store_dir.path().join("tmp"),
            unpacked_before_the_end: Cell::new(None),
        };
        let index = ImageIndex::from_file(source.blobs.dir.join("index.json")).unwrap();
        let manifest = store
            .manifest("app", &source, &index.manifests()[0])
            .unwrap();
        let error = store
            .import_manifest("app", &source, &manifest)
            .unwrap_err();
        assert!(
            matches!(&error, ImageError::DigestMismatch { expected, .. } if *expected == swapped.to_string()),
            "{error}"
        );
        assert_eq!(
            source.unpacked_before_the_end.get(),
            Some(false),
            "nothing may be unpacked before the blob's digest is checked"
        );
        let layers = store_dir.path().join("layers/sha256");
        assert_eq!(fs::read_dir(&layers).map(|d| d.count()).unwrap_or(0), 0);
    }

    #[test]
    fn an_image_unpacking_to_more_than_the_bound_is_refused() {
        let source = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let big = vec![0u8; 4 << 20];
        layout_of_layers(source.path(), &[&[("small", b"s")], &[("zeros", &big)]]);
        let store = ImageStore::new(store_dir.path()).with_max_unpacked(1 << 20);
        let error = store
            .import_layout("bomb", source.path(), None)
            .unwrap_err();
        assert!(matches!(error, ImageError::TooLarge { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("GITVISOR_IMAGE_MAX_UNPACKED_SIZE"),
            "{error}"
        );
        // The small layer is whole and verified, so it stays; the big one is not kept.
        let layers = store_dir.path().join("layers/sha256");
        assert_eq!(fs::read_dir(&layers).unwrap().count(), 1);
        // Under the bound, the same image imports.
        let roomy = ImageStore::new(store_dir.path()).with_max_unpacked(8 << 20);
        assert_eq!(
            roomy
                .import_layout("bomb", source.path(), None)
                .unwrap()
                .lowers
                .len(),
            2
        );
    }

    #[test]
    fn an_image_deeper_than_the_layer_bound_is_refused_before_any_unpacking() {
        let source = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..=super::super::MAX_LAYERS)
            .map(|i| format!("layer-{i}"))
            .collect();
        let files: Vec<[(&str, &[u8]); 1]> =
            names.iter().map(|n| [(n.as_str(), &b"x"[..])]).collect();
        let layers: Vec<&[(&str, &[u8])]> = files.iter().map(|f| &f[..]).collect();
        layout_of_layers(source.path(), &layers);
        let error = ImageStore::new(store_dir.path())
            .import_layout("deep", source.path(), None)
            .unwrap_err();
        assert!(matches!(error, ImageError::Unsupported { .. }), "{error}");
        assert!(error.to_string().contains("at most 128 layers"), "{error}");
        assert!(!store_dir.path().join("layers").exists());
    }
}
