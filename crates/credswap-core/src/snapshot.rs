//! [`Snapshot`]: one published credential, and the borrow [`CurrentGuard`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::{Credential, Generation, Policy};

/// One published credential with what the provider knows about it.
///
/// Snapshots are immutable; [`RotatingCredentials::current`](crate::RotatingCredentials::current) returns the one in effect.
#[derive(Debug)]
pub struct Snapshot {
    credential: Credential,
    generation: Generation,
    fetched_at: Instant,
    effective_since: Instant,
    expires_deadline: Option<Instant>,
    renew_at: Option<Instant>,
    retire_at: Option<Instant>,
    /// An earlier generation with the same login (the store flipped back to it).
    equivalent: Option<Generation>,
    /// The newest generation the database accepted; shared by every snapshot of a provider.
    proven: Arc<Proven>,
}

/// What the database has accepted, shared by every snapshot of a provider: the newest
/// generation, and the earlier generation with the same login, if that snapshot had one.
#[derive(Debug, Default)]
pub(crate) struct Proven {
    generation: AtomicU64,
    equivalent: AtomicU64,
}

impl Proven {
    #[cfg(test)]
    pub(crate) fn at(generation: Generation) -> Arc<Self> {
        let proven = Arc::new(Self::default());
        proven.generation.store(generation.get(), Ordering::Release);
        proven
    }
}

impl Snapshot {
    pub(crate) fn new(
        credential: Credential,
        generation: Generation,
        effective_since: Instant,
        policy: &Policy,
        proven: &Arc<Proven>,
    ) -> Self {
        let now = Instant::now();
        let expires_deadline = credential.expires_at().map(|at| {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            now + left
        });
        let renew_at = expires_deadline
            .map(|deadline| deadline.checked_sub(policy.expiry_margin()).unwrap_or(now));
        // A minted token is needed only at login: the database keeps a session after the
        // token that opened it expires, so its end retires no session.
        let retire_at = renew_at.filter(|_| !credential.is_minted());
        Self {
            credential,
            generation,
            fetched_at: now,
            effective_since,
            expires_deadline,
            renew_at,
            retire_at,
            equivalent: None,
            proven: Arc::clone(proven),
        }
    }

    /// Marks `earlier` as a generation with the same login as this one.
    pub(crate) fn with_equivalent(mut self, earlier: Option<Generation>) -> Self {
        self.equivalent = earlier;
        self
    }

    /// Whether a connection authenticated with `generation` logged in exactly as this snapshot
    /// would: it is this generation, or an earlier one with the same username and password
    /// (a store that flipped back, A→B→A, does not make A's connections stale).
    pub fn is_same_login(&self, generation: Generation) -> bool {
        generation == self.generation || Some(generation) == self.equivalent
    }

    /// An earlier generation with the same login as this one, if the store flipped back to it.
    pub fn equivalent(&self) -> Option<Generation> {
        self.equivalent
    }

    /// The newest generation the database has accepted (a connection opened with it, or the
    /// validator passed); [`Generation`] 0 before any.
    pub fn proven_generation(&self) -> Generation {
        Generation::new(self.proven.generation.load(Ordering::Acquire))
    }

    /// Whether a connection authenticated with `generation` logged in with the login the
    /// database accepted last: the proven generation, or an earlier one with the same login.
    pub fn is_proven_login(&self, generation: Generation) -> bool {
        let equivalent = self.proven.equivalent.load(Ordering::Acquire);
        generation == self.proven_generation()
            || (equivalent != 0 && generation.get() == equivalent)
    }

    /// Whether the database has accepted this snapshot's credential (or an equivalent one).
    pub fn is_proven(&self) -> bool {
        let proven = self.proven_generation();
        proven >= self.generation || self.equivalent == Some(proven)
    }

    pub(crate) fn mark_proven(&self, generation: Generation) {
        let before = self
            .proven
            .generation
            .fetch_max(generation.get(), Ordering::AcqRel);
        if before < generation.get() {
            let equivalent = if generation == self.generation {
                self.equivalent.map_or(0, Generation::get)
            } else {
                0
            };
            self.proven.equivalent.store(equivalent, Ordering::Release);
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
    /// `expires_at - expiry_margin`, if the credential has an end and is not
    /// [minted](Credential::minted) (a token's end retires no session: the database keeps a
    /// session after the token that opened it expires).
    pub fn retire_at(&self) -> Option<Instant> {
        self.retire_at
    }

    /// When the provider needs the next credential from the store: `expires_at -
    /// expiry_margin`, if the credential has an end. For a [minted](Credential::minted)
    /// credential this is when the next token is minted, and a connect never logs in with a
    /// token past it: it waits for the next one (see
    /// [`Connector`](crate::contract::Connector)).
    pub fn renew_at(&self) -> Option<Instant> {
        self.renew_at
    }

    /// Whether this is a minted token within its expiry margin at `now`: a connect must not log
    /// in with it.
    pub fn is_token_due(&self, now: Instant) -> bool {
        self.credential.is_minted() && self.renew_at.is_some_and(|at| now >= at)
    }

    /// Whether `other` holds the same password (token) as this snapshot.
    pub(crate) fn is_same_secret(&self, other: &Snapshot) -> bool {
        self.credential.has_same_password(&other.credential)
    }

    /// When the credential itself ends, on the Tokio clock.
    pub fn expires_deadline(&self) -> Option<Instant> {
        self.expires_deadline
    }
}

/// A borrowed [`Snapshot`], from [`RotatingCredentials::load`](crate::RotatingCredentials::load).
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
