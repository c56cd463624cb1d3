//! [`FileSeam`] on this host: std file calls on blocking threads (a slow or dead disk
//! never stalls the async runtime) and `qemu-img` for what needs the qcow2 format
//! (creating, converting, cloning, growing), as a long child under the step's deadline.
//! See `files.rs` for the naming, the marker and what is observed.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use super::files::{
    FileContent, FileObservation, FileRequest, FileSeam, FileState, ID_XATTR, PARTIAL_SUFFIX,
    RECLAIM_XATTR,
};
use super::lvm::LvmTools;
use super::seam::{LvmError, ProgressSink};
use crate::drivers::volume::{FileFormat, ReclaimPolicy};

/// How long one file operation (or reading the list of volume directories) may take.
pub const FILE_DEADLINE: Duration = Duration::from_secs(60);

/// How long observing one volume directory may take: a local directory of a few
/// hundred images takes milliseconds; one on a dead NFS share would take a soft mount's
/// retries (about 15 s per call), so it is called unreachable after this instead.
pub const DIRECTORY_DEADLINE: Duration = Duration::from_secs(5);

/// The file listing the directories gitvisor has made volumes in, under the state dir.
const DIRECTORIES_FILE: &str = "volume-directories";

/// The magic a qcow2 image starts with.
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// File volumes on this host.
#[derive(Debug, Clone)]
pub struct FileTools {
    state_dir: PathBuf,
    tools: LvmTools,
}

impl FileTools {
    /// Remembers volume directories under `state_dir`.
    pub fn new(state_dir: PathBuf) -> Self {
        FileTools {
            state_dir,
            tools: LvmTools::new(),
        }
    }

    fn directories_file(&self) -> PathBuf {
        self.state_dir.join(DIRECTORIES_FILE)
    }

    async fn qemu_img(&self, args: &[&str]) -> Result<(), LvmError> {
        self.tools.long("qemu-img", args).await.map(|_| ())
    }
}

#[async_trait]
impl FileSeam for FileTools {
    async fn observe(&self, directories: &[PathBuf]) -> Result<FileObservation, LvmError> {
        let list = self.directories_file();
        let mut all: BTreeSet<PathBuf> =
            blocking("list volume directories", move || remembered(&list))
                .await?
                .into_iter()
                .collect();
        all.extend(directories.iter().cloned());
        let reads = all.into_iter().map(|directory| async move {
            let read = directory.clone();
            let result = within(DIRECTORY_DEADLINE, "list volume directory", move || {
                let mut files = Vec::new();
                observe_directory(&read, &mut files).map(|()| files)
            })
            .await;
            (directory, result)
        });
        let mut observation = FileObservation::default();
        for (directory, result) in futures::future::join_all(reads).await {
            match result {
                Ok(files) => observation.files.extend(files),
                Err(LvmError::TimedOut { seconds, .. }) => {
                    observation.unreachable.insert(
                        directory,
                        format!("reading it did not finish within {seconds} s"),
                    );
                }
                Err(LvmError::Io { message, .. }) if is_unreachable_io(&message) => {
                    observation.unreachable.insert(directory, message);
                }
                Err(other) => return Err(other),
            }
        }
        Ok(observation)
    }

    async fn send(
        &self,
        request: &FileRequest,
        progress: ProgressSink<'_>,
    ) -> Result<(), LvmError> {
        match request {
            FileRequest::Create {
                directory,
                partial,
                format,
                size,
                content,
                id,
                reclaim,
            } => {
                let (list, directory, partial_owned) =
                    (self.directories_file(), directory.clone(), partial.clone());
                let (id, reclaim, format, size) = (id.clone(), *reclaim, *format, *size);
                let raw_empty = format == FileFormat::Raw;
                blocking("make", move || {
                    remember(&list, &directory)?;
                    fs::create_dir_all(&directory)
                        .map_err(|e| io_error("make directory", &directory, &e))?;
                    make_marked(&partial_owned, &id, reclaim)?;
                    if raw_empty {
                        let file = fs::OpenOptions::new()
                            .write(true)
                            .open(&partial_owned)
                            .map_err(|e| io_error("open", &partial_owned, &e))?;
                        file.set_len(size)
                            .map_err(|e| io_error("size", &partial_owned, &e))?;
                    }
                    Ok(())
                })
                .await?;
                let partial_str = partial.to_string_lossy();
                let size_str = size.to_string();
                match (content, format) {
                    (FileContent::Download, _) => Err(LvmError::Spawn {
                        program: "qemu-img".into(),
                        message: "a download was not fetched before the create".into(),
                    }),
                    (FileContent::Empty, FileFormat::Raw) => Ok(()),
                    (FileContent::Empty, FileFormat::Qcow2) => {
                        self.qemu_img(&["create", "-q", "-f", "qcow2", &partial_str, &size_str])
                            .await
                    }
                    (FileContent::Clone { base }, _) => {
                        let base = base.to_string_lossy();
                        self.qemu_img(&[
                            "create",
                            "-q",
                            "-f",
                            "qcow2",
                            "-b",
                            &base,
                            "-F",
                            "qcow2",
                            &partial_str,
                            &size_str,
                        ])
                        .await
                    }
                    (
                        FileContent::Image {
                            image,
                            format: from,
                        },
                        to,
                    ) => {
                        let image = image.to_string_lossy();
                        let prepared = if to == FileFormat::Qcow2 {
                            self.qemu_img(&["create", "-q", "-f", "qcow2", &partial_str, &size_str])
                                .await
                        } else {
                            Ok(())
                        };
                        match prepared {
                            Ok(()) => {
                                let mut args = vec!["convert", "-p", "-n"];
                                if to == FileFormat::Raw {
                                    // Just made as a sparse file: zeros need no writing.
                                    args.push("--target-is-zero");
                                }
                                args.extend(["-f", from, "-O", to.as_str(), &image, &partial_str]);
                                self.tools.qemu_img_progress(&args, progress).await
                            }
                            Err(error) => Err(error),
                        }
                    }
                }
            }
            FileRequest::Publish { partial, path } => {
                let (partial, path) = (partial.clone(), path.clone());
                blocking("rename", move || {
                    fs::hard_link(&partial, &path).map_err(|e| io_error("link", &path, &e))?;
                    fs::remove_file(&partial).map_err(|e| io_error("remove", &partial, &e))
                })
                .await
            }
            FileRequest::Grow { path, format, size } => match format {
                FileFormat::Qcow2 => {
                    let path = path.to_string_lossy();
                    self.qemu_img(&["resize", "-q", "-f", "qcow2", &path, &size.to_string()])
                        .await
                }
                FileFormat::Raw => {
                    let (path, size) = (path.clone(), *size);
                    blocking("grow", move || {
                        let file = fs::OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|e| io_error("open", &path, &e))?;
                        let now = file
                            .metadata()
                            .map_err(|e| io_error("stat", &path, &e))?
                            .len();
                        if now < size {
                            file.set_len(size)
                                .map_err(|e| io_error("grow", &path, &e))?;
                        }
                        Ok(())
                    })
                    .await
                }
            },
            FileRequest::Mark { path, id, reclaim } => {
                let (path, id, reclaim) = (path.clone(), id.clone(), *reclaim);
                blocking("mark", move || set_marks(&path, &id, reclaim)).await
            }
            FileRequest::Unmark { path } => {
                let path = path.clone();
                blocking("unmark", move || {
                    for name in [ID_XATTR, RECLAIM_XATTR] {
                        match xattr::remove(&path, name) {
                            Ok(()) => {}
                            Err(e)
                                if e.raw_os_error() == Some(nix::errno::Errno::ENODATA as i32) => {}
                            Err(e) => return Err(io_error("remove xattr from", &path, &e)),
                        }
                    }
                    Ok(())
                })
                .await
            }
            FileRequest::Remove { path } => {
                let path = path.clone();
                blocking("remove", move || match fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_error("remove", &path, &e)),
                })
                .await
            }
        }
    }
}

/// Runs `work` on a blocking thread under [`FILE_DEADLINE`]: a hung filesystem stops
/// this call, not the runtime.
async fn blocking<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T, LvmError> + Send + 'static,
) -> Result<T, LvmError> {
    within(FILE_DEADLINE, what, work).await
}

/// Whether an I/O error says the directory's storage does not answer (a soft NFS mount
/// gives up with ETIMEDOUT or EIO; a server gone away, ESTALE or ENOTCONN).
fn is_unreachable_io(message: &str) -> bool {
    [
        "timed out",
        "Input/output error",
        "Stale file handle",
        "not connected",
        "Host is down",
        "No route to host",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// `work` on a blocking thread under `deadline` (left behind, not waited for, when late).
async fn within<T: Send + 'static>(
    deadline: Duration,
    what: &str,
    work: impl FnOnce() -> Result<T, LvmError> + Send + 'static,
) -> Result<T, LvmError> {
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(LvmError::Spawn {
            program: what.to_owned(),
            message: join.to_string(),
        }),
        Err(_) => Err(LvmError::TimedOut {
            program: format!("{what} (file volumes)"),
            seconds: deadline.as_secs(),
        }),
    }
}

fn io_error(operation: &str, path: &Path, error: &io::Error) -> LvmError {
    LvmError::Io {
        what: format!("{operation} {}", path.display()),
        message: error.to_string(),
    }
}

/// The remembered volume directories (none before the first file volume).
fn remembered(list: &Path) -> Result<Vec<PathBuf>, LvmError> {
    match fs::read_to_string(list) {
        Ok(text) => Ok(text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(PathBuf::from)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_error("read", list, &e)),
    }
}

/// Serialises [`remember`]: volumes are created in parallel, and two read-modify-writes
/// of the list at once would lose a directory or race on the temporary file.
static REMEMBERING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Adds `directory` to the list (written whole to a temporary file, then renamed).
fn remember(list: &Path, directory: &Path) -> Result<(), LvmError> {
    // A panic while holding it left no half-written list behind (the rename is atomic).
    let _one_at_a_time = REMEMBERING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut all = remembered(list)?;
    if all.iter().any(|known| known == directory) {
        return Ok(());
    }
    all.push(directory.to_owned());
    if let Some(parent) = list.parent() {
        fs::create_dir_all(parent).map_err(|e| io_error("make directory", parent, &e))?;
    }
    let text: String = all.iter().map(|d| format!("{}\n", d.display())).collect();
    let temporary = list.with_extension("tmp");
    fs::write(&temporary, text).map_err(|e| io_error("write", &temporary, &e))?;
    fs::rename(&temporary, list).map_err(|e| io_error("rename", list, &e))
}

/// Makes the empty file `path` (never over an existing one) carrying the marker; a
/// filesystem without user xattrs fails it, and the empty file goes again.
fn make_marked(path: &Path, id: &str, reclaim: ReclaimPolicy) -> Result<(), LvmError> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_error("create", path, &e))?;
    if let Err(error) = set_marks(path, id, reclaim) {
        let _ = fs::remove_file(path);
        return Err(error);
    }
    Ok(())
}

fn set_marks(path: &Path, id: &str, reclaim: ReclaimPolicy) -> Result<(), LvmError> {
    let policy = match reclaim {
        ReclaimPolicy::Retain => "Retain",
        ReclaimPolicy::Delete => "Delete",
    };
    for (name, value) in [(ID_XATTR, id), (RECLAIM_XATTR, policy)] {
        xattr::set(path, name, value.as_bytes()).map_err(|e| LvmError::Io {
            what: format!("set the marker {name} on {}", path.display()),
            message: format!(
                "{e}; gitvisor marks its volume files with user extended attributes, so the directory must be on a filesystem that keeps them (ext4, xfs, btrfs, tmpfs from Linux 6.6, NFS 4.2 over one of those)"
            ),
        })?;
    }
    Ok(())
}

/// Whether a directory entry's name is one a volume file can have.
fn image_like(name: &str) -> bool {
    name.ends_with(".qcow2")
        || name.ends_with(".raw")
        || (name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX))
}

fn observe_directory(directory: &Path, files: &mut Vec<FileState>) -> Result<(), LvmError> {
    let entries = match fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("list", directory, &e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", directory, &e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !image_like(name) {
            continue;
        }
        let path = entry.path();
        let metadata = match fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("stat", &path, &e)),
        };
        if !metadata.is_file() {
            continue;
        }
        files.push(read_file(&path, metadata.len())?);
    }
    Ok(())
}

/// One file: its xattrs and its header.
fn read_file(path: &Path, length: u64) -> Result<FileState, LvmError> {
    let text = |name| -> Result<Option<String>, LvmError> {
        match xattr::get(path, name) {
            Ok(value) => Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned())),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => Ok(None),
            Err(e) => Err(io_error("read xattrs of", path, &e)),
        }
    };
    let owner = text(ID_XATTR)?;
    let reclaim = match text(RECLAIM_XATTR)?.as_deref() {
        Some("Retain") => Some(ReclaimPolicy::Retain),
        Some("Delete") => Some(ReclaimPolicy::Delete),
        _ => None,
    };
    let mut header = [0u8; 512];
    let mut file = fs::File::open(path).map_err(|e| io_error("open", path, &e))?;
    let mut filled = 0;
    while filled < header.len() {
        match file.read(&mut header[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error("read", path, &e)),
        }
    }
    let (format, virtual_size, backing) = parse_header(&header[..filled], length, &mut file)
        .map_err(|e| io_error("read the qcow2 header of", path, &e))?;
    Ok(FileState {
        path: path.to_owned(),
        format,
        virtual_size,
        backing,
        owner,
        reclaim,
    })
}

/// The format, virtual size and backing file a file's first bytes say.
fn parse_header(
    header: &[u8],
    length: u64,
    file: &mut (impl Read + io::Seek),
) -> io::Result<(FileFormat, u64, Option<String>)> {
    if header.len() < 32 || &header[..4] != QCOW2_MAGIC {
        return Ok((FileFormat::Raw, length, None));
    }
    let u64_at = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    let backing_offset = u64_at(8);
    let backing_length = u32::from_be_bytes([header[16], header[17], header[18], header[19]]);
    let virtual_size = u64_at(24);
    let backing = if backing_offset == 0 || backing_length == 0 {
        None
    } else {
        // qcow2 limits the name to 1023 bytes.
        let mut name = vec![0u8; (backing_length as usize).min(1023)];
        file.seek(io::SeekFrom::Start(backing_offset))?;
        file.read_exact(&mut name)?;
        Some(String::from_utf8_lossy(&name).into_owned())
    };
    Ok((FileFormat::Qcow2, virtual_size, backing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_remembered_at_once_from_many_threads_are_all_kept() {
        let state = tempfile::tempdir().unwrap();
        let list = state.path().join(DIRECTORIES_FILE);
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let list = list.clone();
                std::thread::spawn(move || remember(&list, Path::new(&format!("/v/{}", i % 8))))
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
        let mut all = remembered(&list).unwrap();
        all.sort();
        let expected: Vec<PathBuf> = (0..8).map(|i| PathBuf::from(format!("/v/{i}"))).collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn a_raw_file_is_its_length_and_a_qcow2_header_is_read() {
        let mut raw = io::Cursor::new(vec![0u8; 16]);
        assert_eq!(
            parse_header(&[0u8; 16], 4096, &mut raw).unwrap(),
            (FileFormat::Raw, 4096, None)
        );
        let mut image = vec![0u8; 600];
        image[..4].copy_from_slice(QCOW2_MAGIC);
        image[8..16].copy_from_slice(&512u64.to_be_bytes());
        image[16..20].copy_from_slice(&6u32.to_be_bytes());
        image[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        image[512..518].copy_from_slice(b"/b.img");
        let header = image[..512].to_vec();
        let mut file = io::Cursor::new(image);
        assert_eq!(
            parse_header(&header, 600, &mut file).unwrap(),
            (FileFormat::Qcow2, 1 << 30, Some("/b.img".to_owned()))
        );
    }
}
