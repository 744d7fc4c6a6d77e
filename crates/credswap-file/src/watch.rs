//! Watching a [`FileSource`]: file-system events (inotify, FSEvents, kqueue,
//! ReadDirectoryChangesW through `notify`) on the directory, a periodic re-read as the fallback,
//! and [`FileWatch`], which wakes a provider.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use credswap_core::RotatingCredentials;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use crate::error::WatchError;
use crate::secret::Fingerprint;
use crate::source::FileSource;

/// Counters of a watcher ([`Changes::stats`], [`FileWatch::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchStats {
    /// Whether the file system's change events are being received now (`false`: polling only,
    /// because the directory does not exist yet or the watch could not be set up).
    pub watching: bool,
    /// File-system events received for the watched directory.
    pub events: u64,
    /// Periodic re-reads (the fallback).
    pub polls: u64,
    /// Reads the watcher completed (the first, which sets the baseline, after events, and
    /// periodic).
    pub reads: u64,
    /// New, complete credentials seen (what [`Changes::changed`] reports).
    pub changes: u64,
    /// Reads refused as malformed or unreadable: nothing was reported for them.
    pub rejected: u64,
    /// Provider refreshes a [`FileWatch`] completed (also the failed ones).
    pub refreshes: u64,
    /// Refreshes by a [`FileWatch`] that failed.
    pub refresh_failures: u64,
}

#[derive(Default)]
struct Counters {
    watching: AtomicBool,
    events: AtomicU64,
    polls: AtomicU64,
    reads: AtomicU64,
    changes: AtomicU64,
    rejected: AtomicU64,
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WatchStats {
        WatchStats {
            watching: self.watching.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            polls: self.polls.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            refreshes: self.refreshes.load(Ordering::Relaxed),
            refresh_failures: self.refresh_failures.load(Ordering::Relaxed),
        }
    }
}

/// Reports when a [`FileSource`]'s files hold a new, complete credential; from
/// [`FileSource::changes`].
///
/// A Tokio task watches the source's [`watched_dir`](FileSource::watched_dir) (not the file:
/// Kubernetes swaps the `..data` symlink and writers rename a new file over the old, so the
/// file's inode changes but its directory stays), waits for events to go quiet for the
/// source's `settle` time, and reads the files. Every `poll_interval` it reads them anyway
/// (file systems without events, a lost watch) and sets the watch up again if it is not
/// established. A read that is malformed (half-written) or fails is never reported; a read
/// whose content differs from the last reported one is, once.
///
/// What changed before the watch was set up is not reported (the first read sets the
/// baseline): [`FileSource::watch`] refreshes its provider once at the start for that.
/// Dropping the last handle stops the task and the watch.
///
/// ```no_run
/// # async fn demo(source: credswap_file::FileSource) -> Result<(), Box<dyn std::error::Error>> {
/// let mut changes = source.changes()?;
/// while changes.changed().await.is_ok() {
///     let secret = source.fetch_secret().await?;
///     println!("new version {:?}", secret.credential().version());
/// }
/// # Ok(()) }
/// ```
pub struct Changes {
    rx: watch::Receiver<u64>,
    counters: Arc<Counters>,
    task: AbortHandle,
    dir: PathBuf,
}

impl Changes {
    pub(crate) fn start(source: FileSource) -> Result<Changes, WatchError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime)?;
        let (tx, rx) = watch::channel(0u64);
        let counters = Arc::new(Counters::default());
        let dir = source.watched_dir();
        let task = runtime
            .spawn(run(source, dir.clone(), tx, counters.clone()))
            .abort_handle();
        Ok(Changes {
            rx,
            counters,
            task,
            dir,
        })
    }

    /// Waits until the files hold a new, complete credential (one not reported before).
    ///
    /// # Errors
    ///
    /// When the watcher task ended (the runtime is shutting down).
    pub async fn changed(&mut self) -> Result<(), WatchClosed> {
        self.rx.changed().await.map_err(|_| WatchClosed)
    }

    /// How many changes were reported so far.
    pub fn count(&self) -> u64 {
        *self.rx.borrow()
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The watcher's counters.
    pub fn stats(&self) -> WatchStats {
        self.counters.snapshot()
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changes")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The watcher task ended; from [`Changes::changed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the file watcher stopped")]
pub struct WatchClosed;

/// Refreshes a provider when its [`FileSource`] changes; from [`FileSource::watch`].
///
/// Keep it as long as the provider: dropping it stops the watcher (the provider's periodic
/// refresh goes on). It holds a handle of the provider, so the provider lives as long as it.
pub struct FileWatch {
    task: AbortHandle,
    counters: Arc<Counters>,
    dir: PathBuf,
}

impl FileWatch {
    pub(crate) fn start(
        mut changes: Changes,
        credentials: RotatingCredentials,
    ) -> Result<FileWatch, WatchError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime)?;
        let counters = changes.counters.clone();
        let dir = changes.dir.clone();
        let task_counters = counters.clone();
        let task = runtime.spawn(async move {
            // A change between the provider's first fetch and the watch being set up.
            refresh(&credentials, &task_counters, "start").await;
            while changes.changed().await.is_ok() {
                refresh(&credentials, &task_counters, "change").await;
            }
        });
        Ok(FileWatch {
            task: task.abort_handle(),
            counters,
            dir,
        })
    }

    /// The watcher's counters, with the refreshes it made.
    pub fn stats(&self) -> WatchStats {
        self.counters.snapshot()
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileWatch")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

async fn refresh(credentials: &RotatingCredentials, counters: &Counters, why: &str) {
    let result = credentials.refresh().await;
    counters.refreshes.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok(snapshot) => tracing::debug!(
            why,
            generation = snapshot.generation().get(),
            version = snapshot.credential().version(),
            "secret file refreshed"
        ),
        Err(e) => {
            counters.refresh_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(why, error = %e, "refreshing after a secret file change failed");
        }
    }
}

/// Sets up the native watch of `dir`; events wake `wake`.
fn arm(
    dir: &Path,
    wake: &Arc<Notify>,
    lost: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
) -> notify::Result<RecommendedWatcher> {
    let (wake, lost, counters) = (wake.clone(), lost.clone(), counters.clone());
    let watched = dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) => {
                // Opening and reading (ours included) change nothing.
                if matches!(event.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write))
                {
                    return;
                }
                if matches!(event.kind, EventKind::Remove(_))
                    && event.paths.iter().any(|p| p == &watched)
                {
                    lost.store(true, Ordering::Relaxed);
                }
                counters.events.fetch_add(1, Ordering::Relaxed);
            }
            // An overflowed queue or a broken watch: read, and set the watch up again.
            Err(_) => lost.store(true, Ordering::Relaxed),
        }
        wake.notify_one();
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

async fn run(source: FileSource, dir: PathBuf, tx: watch::Sender<u64>, counters: Arc<Counters>) {
    let wake = Arc::new(Notify::new());
    let lost = Arc::new(AtomicBool::new(false));
    let (poll, settle) = (source.config().poll_interval, source.config().settle);
    let mut watcher: Option<RecommendedWatcher> = None;
    let mut warned_arm = false;
    let mut last: Option<Fingerprint> = None;
    let mut last_error: Option<String> = None;
    let mut first = true;
    loop {
        if watcher.is_none() || lost.swap(false, Ordering::Relaxed) {
            watcher = None;
            match arm(&dir, &wake, &lost, &counters) {
                Ok(w) => {
                    watcher = Some(w);
                    warned_arm = false;
                }
                Err(e) if !warned_arm => {
                    warned_arm = true;
                    tracing::warn!(
                        dir = %dir.display(),
                        error = %e,
                        poll_ms = poll.as_millis() as u64,
                        "cannot watch the secret directory; re-reading it periodically"
                    );
                }
                Err(_) => {}
            }
            counters
                .watching
                .store(watcher.is_some(), Ordering::Relaxed);
        }
        if !first {
            tokio::select! {
                () = wake.notified() => {
                    // Let the writer finish: read once the events have been quiet for `settle`
                    // (at most 20 settle times after the first).
                    let deadline = tokio::time::Instant::now() + settle * 20;
                    loop {
                        tokio::select! {
                            () = wake.notified() => {}
                            () = tokio::time::sleep(settle) => break,
                            () = tokio::time::sleep_until(deadline) => break,
                        }
                    }
                }
                () = tokio::time::sleep(poll) => {
                    counters.polls.fetch_add(1, Ordering::Relaxed);
                }
                () = tx.closed() => return,
            }
        }
        let baseline = std::mem::take(&mut first);
        let result = source.read().await;
        // Counted once done: a test waiting for the first read then knows the baseline is set.
        counters.reads.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(read) => {
                last_error = None;
                // The first read sets the baseline; after it, a file that appears counts too.
                if !baseline && last != Some(read.fingerprint) {
                    counters.changes.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        dir = %dir.display(),
                        version = read.secret.credential().version(),
                        "secret files changed"
                    );
                    tx.send_modify(|n| *n += 1);
                }
                last = Some(read.fingerprint);
            }
            Err(e) => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                let message = e.to_string();
                if last_error.as_deref() != Some(&message) {
                    tracing::warn!(error = %message, "secret files not used; the last good credential stays in effect");
                    last_error = Some(message);
                }
            }
        }
    }
}
