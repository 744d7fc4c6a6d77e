//! [`Snapshot`]: one published credential, and the borrow [`CurrentGuard`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::{Credential, Generation, Policy};

/// One published credential with what the provider knows about it.
///
/// Snapshots are immutable; [`RotatingCredentials::current`] returns the one in effect.
#[derive(Debug)]
pub struct Snapshot {
    credential: Credential,
    generation: Generation,
    fetched_at: Instant,
    effective_since: Instant,
    expires_deadline: Option<Instant>,
    retire_at: Option<Instant>,
}

impl Snapshot {
    pub(crate) fn new(
        credential: Credential,
        generation: Generation,
        effective_since: Instant,
        policy: &Policy,
    ) -> Self {
        let now = Instant::now();
        let expires_deadline = credential.expires_at().map(|at| {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            now + left
        });
        let retire_at = expires_deadline
            .map(|deadline| deadline.checked_sub(policy.expiry_margin()).unwrap_or(now));
        Self {
            credential,
            generation,
            fetched_at: now,
            effective_since,
            expires_deadline,
            retire_at,
        }
    }

    /// The credential.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// Its generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// When the store last confirmed it (the last successful fetch that returned it).
    pub fn fetched_at(&self) -> Instant {
        self.fetched_at
    }

    /// When this generation was first published.
    pub fn effective_since(&self) -> Instant {
        self.effective_since
    }

    /// When connections authenticated with this credential must be gone:
    /// `expires_at - expiry_margin`, if the credential has an end.
    pub fn retire_at(&self) -> Option<Instant> {
        self.retire_at
    }

    /// When the credential itself ends, on the Tokio clock.
    pub fn expires_deadline(&self) -> Option<Instant> {
        self.expires_deadline
    }
}

/// A borrowed [`Snapshot`], from [`RotatingCredentials::load`].
pub struct CurrentGuard {
    pub(crate) guard: arc_swap::Guard<Arc<Snapshot>>,
}

impl CurrentGuard {
    /// Turns the borrow into an owned snapshot.
    pub fn into_arc(self) -> Arc<Snapshot> {
        arc_swap::Guard::into_inner(self.guard)
    }
}

impl std::ops::Deref for CurrentGuard {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.guard
    }
}

impl fmt::Debug for CurrentGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
