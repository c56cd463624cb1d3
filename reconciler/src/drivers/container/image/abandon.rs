//! Giving up an import from outside the blocking thread that runs it.
//!
//! An import runs on a blocking thread, which nothing can stop from outside. When the
//! step that asked for it is cancelled (SIGTERM) or abandoned at its deadline, the async
//! side drops its future, and with it an [`AbandonOnDrop`] guard that raises the flag;
//! every reader of the import ([`Abandon::reader`]) checks the flag before each read and
//! fails once it is up. With the registry's per-read timeout bounding how long one read
//! can wait, the thread ends soon after, instead of downloading for nobody or waiting
//! on a stalled socket for ever (and, in the controller, each retry stranding another).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The flag an import checks between reads. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Abandon(Arc<AtomicBool>);

impl Abandon {
    pub fn new() -> Self {
        Abandon::default()
    }

    pub fn abandon(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_abandoned(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// A guard that abandons the import when it is dropped: held by the future waiting
    /// for the import, so dropping that future gives the import up.
    pub fn on_drop(&self) -> AbandonOnDrop {
        AbandonOnDrop(self.clone())
    }

    /// `inner`, failing every read once the import is abandoned.
    pub fn reader<R: Read>(&self, inner: R) -> Checked<R> {
        Checked {
            inner,
            abandon: self.clone(),
        }
    }
}

/// See [`Abandon::on_drop`].
#[derive(Debug)]
pub struct AbandonOnDrop(Abandon);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

/// See [`Abandon::reader`].
pub struct Checked<R> {
    inner: R,
    abandon: Abandon,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.abandon.is_abandoned() {
            return Err(io::Error::other(
                "the import was abandoned: its step was cancelled or ran past its deadline",
            ));
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fail_once_the_guard_is_dropped() {
        let abandon = Abandon::new();
        let guard = abandon.on_drop();
        let mut reader = abandon.reader(io::repeat(7));
        let mut buf = [0u8; 4];
        reader.read_exact(&mut buf).unwrap();
        drop(guard);
        let error = reader.read(&mut buf).unwrap_err();
        assert!(error.to_string().contains("abandoned"), "{error}");
    }
}
