//! [`ConnectionTag`]: what an adapter remembers about each physical connection.

use tokio::time::Instant;

use crate::{Generation, Snapshot};

/// The generation a physical connection authenticated with, and when it was opened.
///
/// Taken from the snapshot read *before* connecting: a connect that began under the old
/// credential and finished after a rotation carries the old generation, so it is recognized as
/// stale. `opened_at` is also taken before connecting, so a lease's retirement point that falls
/// during the connect counts against the connection.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use credswap_core::contract::ConnectionTag;
/// use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
///
/// let store = MemorySource::new(Credential::new("app", "first"));
/// let credentials = RotatingCredentials::new(store.clone(), Policy::default()).await?;
/// let tag = ConnectionTag::new(&credentials.current());
/// assert!(!tag.is_stale(&credentials.current()));
///
/// store.set(Credential::new("app", "second"));
/// credentials.refresh().await?;
/// assert!(tag.is_stale(&credentials.current()));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTag {
    generation: Generation,
    opened_at: Instant,
}

impl ConnectionTag {
    /// A tag for a connection about to be opened with `snapshot`'s credential, now.
    pub fn new(snapshot: &crate::Snapshot) -> Self {
        Self::at(snapshot.generation(), Instant::now())
    }

    /// A tag from its parts.
    pub fn at(generation: Generation, opened_at: Instant) -> Self {
        Self {
            generation,
            opened_at,
        }
    }

    /// The generation the connection authenticated with.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// When the connect began.
    pub fn opened_at(&self) -> Instant {
        self.opened_at
    }

    /// **The staleness rule**, the one every adapter applies: a connection must be closed rather
    /// than handed out or kept idle when it authenticated with another generation than
    /// `current`'s, or when `current`'s credential has reached its retirement point
    /// (`expires_at - expiry_margin`) and the connection was opened before that point.
    ///
    /// A connection opened after the retirement point (the store has no replacement yet) is
    /// kept: reopening it per request would not help, and the provider is already refreshing.
    pub fn is_stale(&self, current: &Snapshot) -> bool {
        self.is_stale_at(current, Instant::now())
    }

    /// [`is_stale`](Self::is_stale) at a given instant.
    pub fn is_stale_at(&self, current: &Snapshot, now: Instant) -> bool {
        if self.generation != current.generation() {
            return true;
        }
        current
            .retire_at()
            .is_some_and(|at| now >= at && self.opened_at < at)
    }
}
