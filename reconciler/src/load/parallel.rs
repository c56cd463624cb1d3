//! Reading and parsing a revision's files on several threads.
//!
//! # Why
//!
//! Each file is read and parsed on its own (its documents, their trees, their typed
//! specs): nothing in one depends on another until the cross-document checks. With
//! 10 000 files, one thread doing all of it was about an eighth of a no-op plan, so the
//! files are split into contiguous runs, one per thread (at most [`MAX_THREADS`], the
//! machine's parallelism), and the results put back in the walk's order: the revision,
//! its digest and its diagnostics are the same as one thread's.
//!
//! The revision's size limit still holds: the threads share a count of the bytes read,
//! and a file met after it passed [`MAX_REVISION_BYTES`] is not read here. The caller
//! reads such a file itself if it reaches it before the limit (the count does not
//! follow the walk's order, and a file reached twice counts once there).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::files::{self, FileId, MAX_REVISION_BYTES};
use super::parse_cache::ParsedFile;
use super::{Diagnostic, read_file};

/// Threads at most; more gain nothing on a revision of small files.
const MAX_THREADS: usize = 8;
/// Fewer files than this are read on the calling thread.
const MIN_FILES_PER_THREAD: usize = 64;

/// One file of the walk: what reading it gave (`None`: not read, the revision's size
/// limit was passed), and its documents when asked to parse.
pub(super) struct ReadFile {
    pub file: PathBuf,
    pub read: Option<Result<(FileId, String), Diagnostic>>,
    pub parsed: Option<ParsedFile>,
}

/// Reads (and parses, when `parse`) `files`, in their order.
pub(super) fn read_all(files: Vec<PathBuf>, parse: bool) -> Vec<ReadFile> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
        .min(files.len() / MIN_FILES_PER_THREAD)
        .max(1);
    read_on(files, parse, threads)
}

fn read_on(files: Vec<PathBuf>, parse: bool, threads: usize) -> Vec<ReadFile> {
    let total = AtomicU64::new(0);
    let read_run = |run: Vec<PathBuf>| -> Vec<ReadFile> {
        run.into_iter()
            .map(|file| read_one(file, parse, &total))
            .collect()
    };
    if threads == 1 {
        return read_run(files);
    }
    let per_thread = files.len().div_ceil(threads);
    let mut runs = Vec::with_capacity(threads);
    let mut files = files.into_iter();
    loop {
        let run: Vec<PathBuf> = files.by_ref().take(per_thread).collect();
        if run.is_empty() {
            break;
        }
        runs.push(run);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| scope.spawn(|| read_run(run)))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| match handle.join() {
                Ok(read) => read,
                // A panic while parsing is a bug: let it surface as the caller's own.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

fn read_one(file: PathBuf, parse: bool, total: &AtomicU64) -> ReadFile {
    if total.load(Ordering::Relaxed) > MAX_REVISION_BYTES {
        return ReadFile {
            file,
            read: None,
            parsed: None,
        };
    }
    let read = files::read(&file);
    let parsed = match &read {
        Ok((_, text)) => {
            total.fetch_add(text.len() as u64, Ordering::Relaxed);
            parse.then(|| read_file(&file, text))
        }
        Err(_) => None,
    };
    ReadFile {
        file,
        read: Some(read),
        parsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one file gave, comparably.
    fn summary(read: &ReadFile) -> String {
        let parsed = read.parsed.as_ref().map(|parsed| {
            let names: Vec<String> = parsed
                .resources
                .iter()
                .map(|loaded| loaded.resource.id().to_string())
                .collect();
            let errors: Vec<String> = parsed.diagnostics.iter().map(|d| d.to_string()).collect();
            (names, errors)
        });
        let read_ok = read
            .read
            .as_ref()
            .map(|r| r.as_ref().map(|(_, text)| text.len()).ok());
        format!("{} {read_ok:?} {parsed:?}", read.file.display())
    }

    #[test]
    fn several_threads_read_and_parse_the_files_as_one_thread_does_in_the_same_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for i in 0..300 {
            let file = dir.path().join(format!("f{i:03}.yaml"));
            let text = match i % 7 {
                // A document with an error, and a file that is not there.
                3 => "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: b{i}\nspec:\n  mtu: lots\n".to_owned(),
                5 => {
                    files.push(file);
                    continue;
                }
                _ => format!(
                    "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: b{i}\nspec: {{}}\n---\napiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: c{i}\nspec: {{}}\n"
                ),
            };
            std::fs::write(&file, text).unwrap();
            files.push(file);
        }
        let one: Vec<String> = read_on(files.clone(), true, 1)
            .iter()
            .map(summary)
            .collect();
        let four: Vec<String> = read_on(files.clone(), true, 4)
            .iter()
            .map(summary)
            .collect();
        assert_eq!(one.len(), 300);
        assert_eq!(one, four);
        assert!(one[3].contains("mtu"), "{}", one[3]);
        assert!(one[5].ends_with("Some(None) None"), "{}", one[5]);
        assert!(one[0].contains("Bridge/c0"), "{}", one[0]);
    }
}
