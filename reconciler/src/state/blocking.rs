//! The store off the async runtime. redb does blocking file I/O (reads, `fsync` on every
//! commit, a full integrity check on open); inside `async` code that would stall a runtime
//! worker and every task queued on it. These wrappers run store work on tokio's blocking
//! thread pool and await it. The synchronous methods stay for synchronous callers.

use std::path::{Path, PathBuf};

use super::error::StoreError;
use super::read_only::ReadOnlyStore;
use super::store::{STATE_FILE, Store};

impl Store {
    /// [`Store::open`] on a blocking thread.
    pub async fn open_async(state_dir: &Path) -> Result<Store, StoreError> {
        let dir = state_dir.to_path_buf();
        on_blocking_thread(state_dir.join(STATE_FILE), "open", move || {
            Store::open(&dir)
        })
        .await
    }

    /// Runs `body` with a clone of this store on a blocking thread, e.g.
    /// `store.run_blocking("record apply", move |s| s.record_apply(&batch)).await`.
    pub async fn run_blocking<T, F>(
        &self,
        operation: &'static str,
        body: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        on_blocking_thread(self.path().to_path_buf(), operation, move || body(&store)).await
    }
}

impl ReadOnlyStore {
    /// [`ReadOnlyStore::open`] (which copies and verifies the file) on a blocking thread.
    pub async fn open_async(state_dir: &Path) -> Result<ReadOnlyStore, StoreError> {
        let dir = state_dir.to_path_buf();
        on_blocking_thread(
            state_dir.join(STATE_FILE),
            "open a private copy",
            move || ReadOnlyStore::open(&dir),
        )
        .await
    }

    /// Runs `body` with a clone of this view on a blocking thread.
    pub async fn run_blocking<T, F>(
        &self,
        operation: &'static str,
        body: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadOnlyStore) -> Result<T, StoreError> + Send + 'static,
    {
        let view = self.clone();
        on_blocking_thread(self.path().to_path_buf(), operation, move || body(&view)).await
    }
}

/// Runs `body` on tokio's blocking pool. A panic in `body` (a bug: redb's own panics are
/// already contained as [`StoreError::Damaged`]) resumes on the caller, as if the call had
/// been made there.
async fn on_blocking_thread<T, F>(
    path: PathBuf,
    operation: &'static str,
    body: F,
) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(body).await {
        Ok(result) => result,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(source) => Err(StoreError::Blocking {
            path,
            operation,
            source,
        }),
    }
}
