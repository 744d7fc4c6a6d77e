//! [`RotatingCredentials`]: the provider every adapter reads from.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::health::Health;
use crate::policy::{PolicyError, fmt_duration};
use crate::snapshot::{CurrentGuard, Snapshot};
use crate::{Credential, CredentialSource, Error, Generation, Policy, Validate};

/// Counters of a provider, from [`RotatingCredentials::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Fetches started (initial, scheduled, on demand, after auth failures).
    pub fetches: u64,
    /// Fetches that failed or timed out.
    pub fetch_failures: u64,
    /// New credentials published (generation increments after the first).
    pub rotations: u64,
    /// New credentials that failed validate-before-swap.
    pub rejected: u64,
    /// Auth-failure reports that caused a refresh.
    pub auth_failure_refreshes: u64,
    /// Auth-failure reports ignored because the generation had already moved on.
    pub auth_failure_reports_deduplicated: u64,
    /// Pending credentials fetched after a refused login (the store was mid-rotation).
    pub pending_fetched: u64,
    /// Pending credentials published because the database accepted them before the store
    /// made them current.
    pub pending_published: u64,
    /// Logins the adapters reported the database refused with the current credential.
    pub refusals: u64,
    /// Calls to the source: fetches of the current credential and of the pending one. What a
    /// fleet of providers costs the store (and its request quota).
    pub store_calls: u64,
    /// Fetches caused by refused logins that were coalesced into one already made (the same
    /// burst of refusals, or a store answering `unavailable` being given time).
    pub auth_fetches_coalesced: u64,
    /// New tokens of a [minted](Credential::minted) credential published for the same
    /// login: not rotations (the generation stays, and no session is closed for them).
    pub token_refreshes: u64,
}

/// Why the provider asks the source for its pending credential.
#[derive(Debug, Clone, Copy)]
enum PendingWhy {
    /// A login with the current credential was refused.
    Refused,
    /// The source says the store is rotating ([`CredentialSource::rotation_pending`]).
    Rotating,
}

#[derive(Debug, Clone, Copy)]
struct Refusal {
    generation: Generation,
    /// The first refusal of the current burst (see [`REFUSAL_BURST_QUIET`]).
    since: Instant,
    /// The latest refusal.
    last: Instant,
    count: u64,
}

/// Refusals of one generation this far apart are separate bursts: a connect's wait for a
/// working credential is measured from the first refusal of its own burst, not from an isolated
/// refusal long before.
const REFUSAL_BURST_QUIET: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Default)]
struct Counters {
    fetches: AtomicU64,
    fetch_failures: AtomicU64,
    rotations: AtomicU64,
    rejected: AtomicU64,
    auth_refreshes: AtomicU64,
    auth_dedup: AtomicU64,
    pending_fetched: AtomicU64,
    pending_published: AtomicU64,
    refusals: AtomicU64,
    pending_fetches: AtomicU64,
    auth_coalesced: AtomicU64,
    token_refreshes: AtomicU64,
}

struct Status {
    consecutive_failures: u32,
    /// When the last fetch caused by an authentication failure started.
    last_auth_fetch: Option<Instant>,
    /// The earliest the next fetch caused by an authentication failure may start: the burst's
    /// gap doubles while refusals of the same generation go on (see `auth_gap`), and a store
    /// that answered `unavailable` is given a jittered backoff.
    next_auth_fetch: Option<Instant>,
    /// Fetches made in the current burst of refusals, of the generation `auth_burst_of`
    /// (reset by a refusal of another generation, or a login the database accepts).
    auth_burst: u32,
    auth_burst_of: Option<Generation>,
    /// The database refuses this generation (adapters report it), since when, how often.
    refused: Option<Refusal>,
    warned_refused: Option<Generation>,
    last_error: Option<Error>,
    warned_overdue: Option<Generation>,
    warned_expiring: Option<Generation>,
    warned_stuck: Option<Generation>,
}

struct Shared {
    source: Arc<dyn CredentialSource>,
    policy: Policy,
    validator: Option<Arc<dyn Validate>>,
    current: ArcSwap<Snapshot>,
    /// The newest generation the database accepted (shared with every snapshot).
    proven: Arc<crate::snapshot::Proven>,
    /// The snapshot of that generation, while it is known.
    last_proven: ArcSwapOption<Snapshot>,
    /// The store's pending credential, as the generation after the current one, fetched after
    /// a refused login; published once the database accepts it.
    pending: ArcSwapOption<Snapshot>,
    /// The credential a published pending one replaced, while the store still says it: the
    /// store has not finished its rotation yet, and its current value is not a change. Cleared
    /// once the store no longer rotates (it finished, or the rotation was abandoned or
    /// reverted) and when the database refuses the published pending credential: the store's
    /// working value always wins back.
    superseded: ArcSwapOption<Credential>,
    /// The highest generation number handed out, to a published or to a pending credential.
    /// Numbers are never reused, so a generation names one login for the provider's life: a
    /// pending credential that the store replaces by another gets a new number, and a probe of
    /// the old one can never publish the new one.
    issued: AtomicU64,
    generation_tx: watch::Sender<Generation>,
    /// Single flight: the holder fetches; the result is kept for whoever waited meanwhile.
    flight: tokio::sync::Mutex<Option<Result<Arc<Snapshot>, Error>>>,
    /// Completed fetches; a waiter that sees this move while it waited shares that result.
    completed: AtomicU64,
    schedule_changed: Arc<Notify>,
    counters: Counters,
    status: Mutex<Status>,
    refresher: Mutex<Option<AbortHandle>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.refresher).take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The rotation-aware credential provider.
///
/// A cheap [`Clone`] handle over an [`ArcSwap`] of the current [`Snapshot`]:
///
/// - [`current`](Self::current) is wait-free: an `arc-swap` load, no lock, whatever the
///   refresher is doing. Pools call it at every connect.
/// - [`refresh`](Self::refresh) is single-flight: any number of concurrent callers cause one
///   fetch and all get its result, so an auth-failure storm cannot stampede the secret store.
/// - An adapter's report of a refused login ([`contract::Feedback::report_auth_failure`](crate::contract::Feedback::report_auth_failure)) refreshes only if the generation that
///   failed is still current.
/// - A background refresher fetches every `refresh_interval` (shortened by jitter; with jitter
///   on, the first time at a random point of the interval, and each time counted from the last
///   fetch's start, so that neither a fleet started at once nor a store that held the fleet's
///   calls puts the fleet's calls in step), earlier when
///   `expires_at - expiry_margin` comes first, backs off on errors while serving the last good
///   credential, and stops when the last handle is dropped.
/// - An optional validator must accept a new credential before it is published.
/// - [`subscribe`](Self::subscribe) tells adapters when the generation changes; it changes only
///   when the username or password does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
///
/// let store = MemorySource::new(Credential::new("app", "first-password"));
/// let credentials = RotatingCredentials::new(store.clone(), Policy::default()).await?;
/// assert_eq!(credentials.current().generation().get(), 1);
///
/// store.set(Credential::new("app", "second-password"));
/// let snapshot = credentials.refresh().await?;
/// assert_eq!(snapshot.generation().get(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RotatingCredentials {
    shared: Arc<Shared>,
}

impl fmt::Debug for RotatingCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.shared.current.load();
        f.debug_struct("RotatingCredentials")
            .field("username", &current.credential().username())
            .field("generation", &current.generation())
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

/// The longest gap between two store fetches caused by refusals of one generation: a store
/// that has been fixed is seen this soon by a pool whose logins it refused.
pub const AUTH_REFRESH_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// The gap after the `burst`-th store fetch of one burst of refusals: `auth_refresh_interval`,
/// doubling with each fetch that did not end the refusals, up to [`AUTH_REFRESH_MAX`] (never
/// below the policy's interval). A pool whose store keeps the refused credential (a mistyped
/// secret) asks it a few times a second at first, then every few seconds; a store that is
/// fixed is still seen within that cap.
fn auth_gap(policy: &Policy, burst: u32) -> std::time::Duration {
    let exp = burst.saturating_sub(1).min(16);
    policy
        .auth_refresh_interval()
        .saturating_mul(1u32 << exp)
        .min(AUTH_REFRESH_MAX.max(policy.auth_refresh_interval()))
}

/// "Full jitter": a random delay in `[0, cap]`, so that the pools of a fleet that all met the
/// same throttling store do not come back in step.
fn full_jitter(cap: std::time::Duration) -> std::time::Duration {
    cap.mul_f64(rand::random::<f64>())
}

/// How long the store has held `pending`: since the store created it when it said
/// (Secrets Manager's version `CreatedDate`), else since this provider first read it.
fn pending_age(pending: &Snapshot) -> std::time::Duration {
    let seen = Instant::now().saturating_duration_since(pending.effective_since());
    let issued = pending
        .credential()
        .issued_at()
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .unwrap_or_default();
    seen.max(issued)
}

async fn fetch_with_timeout(
    source: &dyn CredentialSource,
    policy: &Policy,
) -> Result<Credential, Error> {
    let span = tracing::debug_span!("credswap.fetch");
    match tokio::time::timeout(policy.fetch_timeout(), source.fetch().instrument(span)).await {
        Ok(Ok(credential)) => Ok(credential),
        Ok(Err(e)) => Err(Error::source_failed(e)),
        Err(_) => Err(Error::timeout(policy.fetch_timeout())),
    }
}

impl RotatingCredentials {
    /// A builder over `source`.
    pub fn builder(source: impl CredentialSource) -> RotatingCredentialsBuilder {
        Self::builder_from_arc(Arc::new(source))
    }

    /// A builder over a shared source.
    pub fn builder_from_arc(source: Arc<dyn CredentialSource>) -> RotatingCredentialsBuilder {
        RotatingCredentialsBuilder {
            source,
            policy: Policy::default(),
            validator: None,
            background_refresh: true,
        }
    }

    /// Builds a provider over `source` with `policy`, no validator, background refresh on.
    pub async fn new(source: impl CredentialSource, policy: Policy) -> Result<Self, Error> {
        Self::builder(source).policy(policy).build().await
    }

    /// The credential in effect. Wait-free: one `arc-swap` load and a reference-count increment.
    pub fn current(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// The credential in effect, borrowed: an `arc-swap` load without a reference-count
    /// increment in the common case. For short, synchronous reads on a hot path (a pool's
    /// checkout hook); keep [`current`](Self::current) for a snapshot held across `.await`s.
    /// Holding many guards at once on one thread is correct but makes further loads slower.
    pub fn load(&self) -> CurrentGuard {
        CurrentGuard {
            guard: self.shared.current.load(),
        }
    }

    /// The generation in effect, without touching a reference count.
    pub fn generation(&self) -> Generation {
        self.shared.current.load().generation()
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// A receiver that sees every generation change (and the current generation at once), and
    /// is woken again when the database first accepts the current generation (see
    /// [`Snapshot::is_proven`]).
    ///
    /// When every handle of the provider is dropped, `changed()` on the receiver returns an error.
    pub fn subscribe(&self) -> watch::Receiver<Generation> {
        self.shared.generation_tx.subscribe()
    }

    /// Fetches from the source now and publishes the result if the login changed.
    ///
    /// Single-flight: callers that arrive while a fetch is in progress wait for it and get its
    /// result instead of starting their own. On failure the current credential stays in effect.
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, Error> {
        let seen = self.shared.completed.load(Ordering::Acquire);
        let mut flight = self.shared.flight.lock().await;
        if self.shared.completed.load(Ordering::Acquire) != seen
            && let Some(result) = flight.as_ref()
        {
            return result.clone();
        }
        let span = tracing::debug_span!("credswap.refresh", generation = self.generation().get());
        let result = self.shared.fetch_and_publish().instrument(span).await;
        *flight = Some(result.clone());
        self.shared.completed.fetch_add(1, Ordering::Release);
        drop(flight);
        self.shared.schedule_changed.notify_one();
        result
    }

    /// The provider's counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            fetches: c.fetches.load(Ordering::Relaxed),
            fetch_failures: c.fetch_failures.load(Ordering::Relaxed),
            rotations: c.rotations.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            auth_failure_refreshes: c.auth_refreshes.load(Ordering::Relaxed),
            auth_failure_reports_deduplicated: c.auth_dedup.load(Ordering::Relaxed),
            pending_fetched: c.pending_fetched.load(Ordering::Relaxed),
            pending_published: c.pending_published.load(Ordering::Relaxed),
            refusals: c.refusals.load(Ordering::Relaxed),
            store_calls: c.fetches.load(Ordering::Relaxed)
                + c.pending_fetches.load(Ordering::Relaxed),
            auth_fetches_coalesced: c.auth_coalesced.load(Ordering::Relaxed),
            token_refreshes: c.token_refreshes.load(Ordering::Relaxed),
        }
    }

    /// Age, expiry and refresh state of the current credential.
    ///
    /// Logs a `tracing` warning, once per generation, when the credential is older than the
    /// rotation interval or within the expiry margin.
    pub fn health(&self) -> Health {
        self.shared.health(true)
    }
}

impl Shared {
    /// The next generation number: never one handed out before.
    fn allocate(&self) -> Generation {
        Generation::new(self.issued.fetch_add(1, Ordering::AcqRel) + 1)
    }

    async fn fetch_and_publish(&self) -> Result<Arc<Snapshot>, Error> {
        self.counters.fetches.fetch_add(1, Ordering::Relaxed);
        let outcome = self.fetch_validated().await;
        if let Ok(snapshot) = &outcome {
            // Mid-rotation, the pending credential is tried before the store finishes, so that
            // the pool's old sessions can go as soon as the database has the new password.
            // Once it has been adopted (the database accepted it; `superseded` holds the login
            // it replaced), the store's pending credential is the current one: reading it again
            // at every refresh until finishSecret would cost a fleet one more store call per
            // refresh and find nothing new. A refusal still reads it (a rotation retried or
            // reverted after the adoption).
            if self.source.rotation_pending() {
                if self.superseded.load().is_none() {
                    self.load_pending(snapshot.generation(), PendingWhy::Rotating)
                        .await;
                }
            } else if self.pending.load().is_some() {
                self.pending.store(None);
            }
        }
        let mut status = lock(&self.status);
        match outcome {
            Ok(snapshot) => {
                if status.consecutive_failures > 0 {
                    // The store answers again: no backoff left for refusal fetches.
                    status.next_auth_fetch = None;
                }
                status.consecutive_failures = 0;
                status.last_error = None;
                Ok(snapshot)
            }
            Err(e) => {
                self.counters.fetch_failures.fetch_add(1, Ordering::Relaxed);
                status.consecutive_failures = status.consecutive_failures.saturating_add(1);
                status.last_error = Some(e.clone());
                let current = self.current.load();
                tracing::warn!(
                    error = %e,
                    consecutive_failures = status.consecutive_failures,
                    serving_generation = current.generation().get(),
                    "credential refresh failed; serving the last good credential"
                );
                Err(e)
            }
        }
    }

    async fn fetch_validated(&self) -> Result<Arc<Snapshot>, Error> {
        let credential = fetch_with_timeout(&*self.source, &self.policy).await?;
        let current = self.current.load_full();
        if !self.source.rotation_pending() && self.superseded.load().is_some() {
            // The store no longer rotates: it finished, or the rotation was abandoned or
            // reverted. Its current value is what the database has now.
            self.superseded.store(None);
        }
        if let Some(superseded) = self.superseded.load_full() {
            if superseded.is_same_login(&credential) {
                // The store has not made its pending credential current yet (the rotation's
                // finishSecret is still to come): not a change.
                tracing::debug!(
                    generation = current.generation().get(),
                    "the store still has the credential its pending one replaced"
                );
                return Ok(current);
            }
            self.superseded.store(None);
        }
        if current.credential().is_same_login(&credential) {
            // Same login: refresh metadata (version, expiry) without a new generation. For a
            // minted credential this may be a new token: published for the connects to come,
            // while the sessions of the previous one stay.
            let new_token = !current.credential().has_same_password(&credential);
            let snapshot = Arc::new(
                Snapshot::new(
                    credential,
                    current.generation(),
                    current.effective_since(),
                    &self.policy,
                    &self.proven,
                )
                .with_equivalent(current.equivalent()),
            );
            if self
                .last_proven
                .load()
                .as_ref()
                .is_some_and(|p| p.generation() == snapshot.generation())
            {
                self.last_proven.store(Some(Arc::clone(&snapshot)));
            }
            self.current.store(Arc::clone(&snapshot));
            if new_token {
                self.counters
                    .token_refreshes
                    .fetch_add(1, Ordering::Relaxed);
                // Same generation: adapters whose pool carries the login in its options (sqlx)
                // take the new token; the rest find nothing stale.
                self.generation_tx.send_replace(snapshot.generation());
                tracing::debug!(
                    generation = snapshot.generation().get(),
                    username = %snapshot.credential().username(),
                    "new token minted for the same login"
                );
            }
            return Ok(snapshot);
        }
        if let Some(validator) = &self.validator
            && let Err(e) = validate_bounded(&**validator, &credential, &self.policy).await
        {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        // The store finished the rotation whose pending credential the provider holds: the
        // same login keeps its number (connections opened by pending trials carry it).
        // Anything else is a new login and gets a new number.
        let generation = match self.pending.load().as_ref() {
            Some(pending)
                if pending.generation() > current.generation()
                    && pending.credential().is_same_login(&credential) =>
            {
                pending.generation()
            }
            _ => self.allocate(),
        };
        // A flip back to the last credential the database accepted (A→B→A) is the same login
        // as that generation: its connections stay current, and it needs no proof.
        let equivalent = self
            .last_proven
            .load()
            .as_ref()
            .filter(|p| {
                p.generation() != current.generation() && p.credential().is_same_login(&credential)
            })
            .map(|p| p.generation());
        let snapshot = Arc::new(
            Snapshot::new(
                credential,
                generation,
                Instant::now(),
                &self.policy,
                &self.proven,
            )
            .with_equivalent(equivalent),
        );
        if self.validator.is_some() || equivalent.is_some() {
            snapshot.mark_proven(generation);
            self.last_proven.store(Some(Arc::clone(&snapshot)));
        }
        let _publish =
            tracing::debug_span!("credswap.publish", generation = generation.get()).entered();
        // Only the single-flight holder stores, so generations never go backwards.
        self.current.store(Arc::clone(&snapshot));
        // A pending credential fetched for the generation before is not the next one any more.
        self.pending.store(None);
        self.generation_tx.send_replace(generation);
        self.counters.rotations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            generation = generation.get(),
            username = %snapshot.credential().username(),
            version = ?snapshot.credential().version(),
            "credential rotated"
        );
        Ok(snapshot)
    }

    fn health(&self, warn: bool) -> Health {
        let current = self.current.load_full();
        let now = Instant::now();
        let age = match current.credential().issued_at() {
            Some(issued) => SystemTime::now().duration_since(issued).unwrap_or_default(),
            None => now.saturating_duration_since(current.effective_since()),
        };
        let mut status = lock(&self.status);
        let health = Health {
            generation: current.generation(),
            username: current.credential().username().to_owned(),
            age,
            rotation_interval: current
                .credential()
                .rotation_interval()
                .unwrap_or(self.policy.rotation_interval()),
            next_rotation_in: current
                .credential()
                .next_rotation_at()
                .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default()),
            expires_in: current
                .expires_deadline()
                .map(|deadline| deadline.saturating_duration_since(now)),
            expiry_margin: self.policy.expiry_margin(),
            consecutive_failures: status.consecutive_failures,
            last_error: status.last_error.clone(),
            refused: status
                .refused
                .filter(|r| r.generation == current.generation())
                .map(|r| (now.saturating_duration_since(r.since), r.count)),
            rotation_pending_for: self
                .pending
                .load()
                .as_ref()
                .filter(|p| p.generation() > current.generation())
                .map(|p| pending_age(p)),
            pending_trial_window: self.policy.pending_trial_window(),
        };
        if warn {
            if health.is_overdue() && status.warned_overdue != Some(current.generation()) {
                status.warned_overdue = Some(current.generation());
                health.warn_overdue();
            }
            let stuck = self.pending.load().as_ref().map(|p| p.generation());
            if health.is_rotation_stuck() && status.warned_stuck != stuck {
                status.warned_stuck = stuck;
                health.warn_stuck();
            }
            if health.is_expiring() && status.warned_expiring != Some(current.generation()) {
                status.warned_expiring = Some(current.generation());
                health.warn_expiring();
            }
        }
        health
    }
}

mod builder;
mod feedback;
mod pending;
mod refresher;

pub use builder::RotatingCredentialsBuilder;
use builder::validate_bounded;

#[cfg(test)]
mod tests;
