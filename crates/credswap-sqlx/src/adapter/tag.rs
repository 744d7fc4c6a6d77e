//! How a pooled connection carries its [`ConnectionTag`].
//!
//! sqlx gives its hooks no per-connection identity and nowhere to attach data: only
//! `PoolConnectionMetadata::age`, from which the connection's creation instant follows. sqlx
//! stamps that instant right after `after_connect` returns, and the adapter's `after_connect`
//! ends by recording the new connection's tag with the instant it was admitted. A hook then
//! finds a connection's tag as the one admitted last before the connection was created.
//!
//! sqlx also closes connections without telling a hook (its lifetime and idle limits, a failed
//! ping, `PgPool::close`). The watcher lets go of the tags of such connections
//! ([`Tags::reconcile`]): the pool never holds fewer connections than it has live tags.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use credswap_core::Snapshot;
use credswap_core::contract::{ConnectionTag, LiveConnection};
use tokio::time::Instant;

/// A connection created longer than this after the last admission before it has no tag (it is
/// treated as stale, and counted as untagged).
const STAMP_WINDOW: Duration = Duration::from_secs(1);

/// The tags of one pool's live connections.
pub(crate) struct Tags {
    /// Ordered by admission instant.
    live: Mutex<Vec<Entry>>,
    /// The pool's `max_lifetime`: sqlx closes an older connection when it is returned.
    max_lifetime: Option<Duration>,
}

struct Entry {
    admitted: Instant,
    tag: ConnectionTag,
    _live: LiveConnection,
}

/// What the tags say about a pooled connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Keep it.
    Current,
    /// Close it: it authenticated with another login, or its lease is ending.
    Stale,
    /// Close it: its tag was not found.
    Untagged,
    /// Close it: it is past the pool's `max_lifetime` (its tag was let go).
    Expired,
    /// Close it: it reached the pool's maximum session age.
    Aged,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tags {
    pub(crate) fn new(max_lifetime: Option<Duration>) -> Self {
        Self {
            live: Mutex::default(),
            max_lifetime,
        }
    }

    /// Records the tag of the connection sqlx is about to stamp: call it last in
    /// `after_connect`. It counts as live until its tag is let go.
    pub(crate) fn admitted(&self, tag: ConnectionTag, live: LiveConnection) {
        let now = Instant::now();
        let mut entries = lock(&self.live);
        if let Some(max) = self.max_lifetime {
            // Closed by sqlx when returned, without a hook; a busy one is let go early.
            let expired = entries.partition_point(|e| e.admitted + max < now);
            entries.drain(..expired);
        }
        entries.push(Entry {
            admitted: now,
            tag,
            _live: live,
        });
    }

    /// The index of the entry of a connection of this `age`.
    fn find(entries: &[Entry], age: Duration) -> Option<usize> {
        let now = Instant::now();
        let created = now.checked_sub(age).unwrap_or(now);
        let after = entries.partition_point(|e| e.admitted <= created);
        let index = after.checked_sub(1)?;
        (created - entries[index].admitted <= STAMP_WINDOW).then_some(index)
    }

    /// Judges a pooled connection of this `age` by [`ConnectionTag::is_stale`]; lets go of the
    /// tag of one that is to be closed.
    pub(crate) fn judge(&self, age: Duration, current: &Snapshot) -> Verdict {
        let mut entries = lock(&self.live);
        match Self::find(&entries, age) {
            Some(index) if entries[index].tag.is_aged_at(Instant::now()) => {
                entries.remove(index);
                Verdict::Aged
            }
            Some(index) if entries[index].tag.is_stale(current) => {
                entries.remove(index);
                Verdict::Stale
            }
            Some(_) => Verdict::Current,
            None if self.max_lifetime.is_some_and(|max| age > max) => Verdict::Expired,
            None => Verdict::Untagged,
        }
    }

    /// Whether a live connection has reached the pool's maximum session age (the watcher sweeps
    /// then).
    pub(crate) fn any_aged(&self) -> bool {
        let now = Instant::now();
        lock(&self.live).iter().any(|e| e.tag.is_aged_at(now))
    }

    /// Lets go of the tag of a connection of this `age` that is being closed for another reason.
    pub(crate) fn closed(&self, age: Duration) {
        let mut entries = lock(&self.live);
        if let Some(index) = Self::find(&entries, age) {
            entries.remove(index);
        }
    }

    /// Lets go of the oldest tags while there are more than the pool's `size` (sqlx closed
    /// some connections without telling).
    pub(crate) fn reconcile(&self, size: usize) {
        let mut entries = lock(&self.live);
        let excess = entries.len().saturating_sub(size);
        entries.drain(..excess);
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tags")
            .field("live", &lock(&self.live).len())
            .finish()
    }
}
