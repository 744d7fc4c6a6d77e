//! [`Rotation`]: the handle every adapter returns beside its pool.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::budget::{Budget, SLOT_WAIT_MAX};
use super::classify::Failure;
use super::proof::{Probe, Proof};
use super::stats::{AdapterStats, Counters};
use super::tag::ConnectionTag;
use crate::{RotatingCredentials, Snapshot};

/// After a canary taken at a checkout or a return, how long the pool has to prove the new login
/// with its own connect before the adapter probes.
const PROBE_AFTER_BUSY_CANARY: Duration = Duration::from_millis(200);

/// The handle an adapter returns beside its pool: the provider the pool follows and the
/// adapter's counters. The same type for every adapter.
///
/// Cheap to clone. Dropping it changes nothing: the pool keeps following the credential.
#[derive(Clone)]
pub struct Rotation {
    credentials: RotatingCredentials,
    counters: Arc<Counters>,
    proof: Arc<Proof>,
    budget: Arc<Budget>,
}

impl Rotation {
    /// A handle for a new adapter over `credentials`, with zeroed counters.
    pub fn new(credentials: RotatingCredentials) -> Self {
        Self {
            credentials,
            counters: Arc::default(),
            proof: Arc::default(),
            budget: Arc::default(),
        }
    }

    /// Gives the pool's `max_size`: from then on the pool's connections (those opened through
    /// the [`Connector`](super::Connector)) and the adapter's probes share that many sessions,
    /// so a probe never takes the pool past its size (see [`budget`](super::budget)). Set
    /// once, at build; without it probes are not counted.
    pub fn limit_sessions(&self, max_size: usize) {
        self.budget.limit(max_size);
    }

    /// The session budget given by [`limit_sessions`](Self::limit_sessions).
    pub fn session_limit(&self) -> Option<usize> {
        self.budget.max_size()
    }

    pub(crate) fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Gives the adapter's probe: open one connection with the snapshot's login, outside the
    /// pool, and close it (see [`proof`](super::proof)). Set once, at build.
    pub fn set_probe<F, Fut>(&self, probe: F)
    where
        F: Fn(Arc<Snapshot>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
    {
        let probe: Probe = Arc::new(move |snapshot| Box::pin(probe(snapshot)));
        self.proof.set_probe(probe);
    }

    /// Whether the adapter gave its probe.
    pub fn has_probe(&self) -> bool {
        self.proof.probe().is_some()
    }

    /// Takes a canary if one is due (see [`proof`](super::proof)) and returns the login it is
    /// for: `current`'s while it is unproven, otherwise the store's pending login while the
    /// store is rotating (a pending trial). Call it only when about to let a connection of an
    /// older login go for it.
    pub fn take_canary(&self, current: &Snapshot) -> Option<Arc<Snapshot>> {
        let now = tokio::time::Instant::now();
        if !current.is_proven() {
            if !self.proof.take_canary(current, false, now) {
                return None;
            }
            let owned = self.credentials.current();
            return (owned.generation() == current.generation()).then_some(owned);
        }
        let pending = self.credentials.pending_on_trial()?;
        self.proof
            .take_canary(&pending, true, now)
            .then_some(pending)
    }

    /// Whether the pools are trying the store's pending credential now (pending trials, see
    /// [`proof`](super::proof)): a drain that wakes only on changes wakes now and then while
    /// this holds. False for a stuck rotation, whose pending login is no longer tried.
    pub fn is_trying_pending(&self) -> bool {
        self.credentials.pending_on_trial().is_some()
    }

    /// Whether `login` still needs a canary's proof: it is the current login and unproven, or
    /// the store's pending login.
    pub fn is_canary_login(&self, login: &Snapshot) -> bool {
        let current = self.credentials.load();
        if login.generation() == current.generation() {
            return !current.is_proven();
        }
        self.credentials
            .pending_on_trial()
            .is_some_and(|pending| pending.generation() == login.generation())
    }

    /// The drain's verdict on a connection tagged `tag`: close it now rather than hand it out or
    /// keep it idle. True when the staleness rule says so ([`ConnectionTag::is_stale`]), and now
    /// and then for one connection of an older login (a canary, see [`proof`](super::proof)):
    /// while `current`'s login is not proven yet, so that the pool opens one with the new
    /// login, and while the store is rotating, so that the pool tries its pending login.
    /// `idle` says whether the connection is idle (else it is being checked out or returned); a
    /// canary taken for an idle connection is followed by a probe.
    pub fn should_close(&self, tag: &ConnectionTag, current: &Snapshot, idle: bool) -> bool {
        if tag.is_stale(current) {
            return true;
        }
        if !current.is_proven() {
            if current.is_same_login(tag.generation())
                || !self
                    .proof
                    .take_canary(current, false, tokio::time::Instant::now())
            {
                return false;
            }
            Counters::bump(&self.counters.canaries);
            tracing::debug!(
                generation = current.generation().get(),
                canary = tag.generation().get(),
                "the new credential is not proven yet; retiring one connection of the last proven one to try it"
            );
            // Only a canary pays for an owned snapshot; the common verdict stays a borrow.
            let owned = self.credentials.current();
            if owned.generation() != current.generation() {
                // Newer still: the pool's replacement connect uses it.
                return true;
            }
            if idle {
                self.spawn_probe(owned, Duration::ZERO);
            } else {
                // The pool fills the canary's slot on demand, and that connect proves the login.
                // If nothing has proven it a moment later, the slot is still free: probe then.
                self.spawn_probe(owned, PROBE_AFTER_BUSY_CANARY);
            }
            return true;
        }
        // The store is rotating: now and then, one connection of the current login makes room
        // for a pending trial.
        let Some(pending) = self.take_canary(current) else {
            return false;
        };
        if tag.generation() >= pending.generation() {
            return false;
        }
        Counters::bump(&self.counters.canaries);
        tracing::debug!(
            generation = current.generation().get(),
            pending = pending.generation().get(),
            canary = tag.generation().get(),
            "the store is rotating; retiring one connection to try its pending credential"
        );
        if idle {
            self.spawn_probe(pending, Duration::ZERO);
        }
        // A busy canary: the pool fills its slot on demand with the current login; refused
        // (the database has the pending one), that connect tries the pending login and the
        // provider publishes it. A probe beside it could take the pool past its size.
        true
    }

    /// Starts proving `login` (the current login while unproven, or the store's pending one)
    /// through the adapter's probe, in the background, after `delay` and only if it still needs
    /// proof then, unless a proof is already running or no probe was given. Call it after
    /// closing an idle canary.
    ///
    /// A pending trial logs in with the current login first, and with the pending one only if
    /// the database refuses the current one: a pending version the database never got (a
    /// stuck rotation) then costs no refused login at all, and after setSecret the trial costs
    /// the one refusal a plain pool's next connect would meet.
    pub fn spawn_probe(&self, login: Arc<Snapshot>, delay: Duration) {
        let Some(probe) = self.proof.probe() else {
            return;
        };
        if !self.proof.start_probing() {
            return;
        }
        let rotation = self.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
                if !rotation.is_canary_login(&login) {
                    rotation.proof.done_probing();
                    return;
                }
            }
            // A place in the pool's session budget first: the canary's slot, unless the pool
            // filled it again meanwhile (then the probe waits for one, or gives up).
            let Some(slot) = rotation.budget.slot(SLOT_WAIT_MAX).await else {
                Counters::bump(&rotation.counters.probes_deferred);
                tracing::debug!(
                    generation = login.generation().get(),
                    "no session left in the pool's budget for a probe; the next canary tries again"
                );
                rotation.proof.done_probing();
                return;
            };
            if slot.is_counted() && !rotation.is_canary_login(&login) {
                // Proven (or superseded) while waiting for the slot.
                rotation.proof.done_probing();
                return;
            }
            let generation = login.generation();
            let current = rotation.credentials.current();
            if generation > current.generation() {
                // A pending trial: the current login first.
                match probe(Arc::clone(&current)).await {
                    Ok(()) => {
                        rotation.credentials.report_accepted(current.generation());
                        drop(slot);
                        rotation.proof.done_probing();
                        return;
                    }
                    Err(Failure::Auth) => {
                        rotation.credentials.report_refused(current.generation());
                    }
                    Err(failure) => {
                        tracing::debug!(
                            generation = current.generation().get(),
                            failure = failure.as_str(),
                            "a pending trial's login with the current credential failed; the next canary tries again"
                        );
                        drop(slot);
                        rotation.proof.done_probing();
                        return;
                    }
                }
            }
            let result = probe(Arc::clone(&login)).await;
            drop(slot);
            match result {
                Ok(()) => {
                    if generation > rotation.credentials.generation() {
                        Counters::bump(&rotation.counters.pending_connects);
                    }
                    rotation.credentials.report_accepted(generation);
                }
                Err(Failure::Auth) => rotation.credentials.report_refused(generation),
                Err(failure) => tracing::debug!(
                    generation = generation.get(),
                    failure = failure.as_str(),
                    "proving the new credential failed; the next canary tries again"
                ),
            }
            rotation.proof.done_probing();
        });
    }

    /// The adapter's counters.
    pub fn stats(&self) -> AdapterStats {
        self.counters.snapshot(&self.credentials.load())
    }

    /// The provider the pool follows.
    pub fn credentials(&self) -> &RotatingCredentials {
        &self.credentials
    }

    /// The counters themselves, for the adapter's own code.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

impl fmt::Debug for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotation")
            .field("credentials", &self.credentials)
            .field("stats", &self.stats())
            .finish()
    }
}
