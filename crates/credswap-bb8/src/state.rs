use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use credswap_core::{Generation, RotatingCredentials};

use crate::Error;

/// What the adapter shares between its manager, its connections' tasks and the handle.
pub(crate) struct State {
    pub(crate) credentials: RotatingCredentials,
    opened: Mutex<BTreeMap<Generation, u64>>,
    live: Mutex<BTreeMap<Generation, usize>>,
    pub(crate) stale_closed: AtomicU64,
    pub(crate) stale_closed_idle: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) auth_retries: AtomicU64,
    pub(crate) auth_retry_failures: AtomicU64,
    connect_failures: AtomicU64,
    consecutive_connect_failures: AtomicU64,
    last_connect_error: Mutex<Option<Error>>,
    /// Set by the first `is_valid` call: proof that bb8 validates every checkout
    /// (`test_on_check_out`, bb8's default), so a connection not marked busy is really idle and
    /// may be closed by its own task. See `driver`.
    checkouts_validated: AtomicBool,
    warned_unvalidated: AtomicBool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    pub(crate) fn new(credentials: RotatingCredentials) -> Self {
        Self {
            credentials,
            opened: Mutex::default(),
            live: Mutex::default(),
            stale_closed: AtomicU64::new(0),
            stale_closed_idle: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            auth_retries: AtomicU64::new(0),
            auth_retry_failures: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            consecutive_connect_failures: AtomicU64::new(0),
            last_connect_error: Mutex::new(None),
            checkouts_validated: AtomicBool::new(false),
            warned_unvalidated: AtomicBool::new(false),
        }
    }

    /// A physical connection was opened with `generation`.
    pub(crate) fn record_open(&self, generation: Generation) {
        *lock(&self.opened).entry(generation).or_default() += 1;
        *lock(&self.live).entry(generation).or_default() += 1;
    }

    /// The physical connection opened with `generation` ended (its task finished).
    pub(crate) fn record_gone(&self, generation: Generation) {
        let mut live = lock(&self.live);
        if let Some(n) = live.get_mut(&generation) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(&generation);
            }
        }
    }

    pub(crate) fn record_connect_success(&self) {
        let failed = self.consecutive_connect_failures.swap(0, Ordering::Relaxed);
        if failed > 0 {
            tracing::info!(
                failed_attempts = failed,
                "connecting to the database works again"
            );
        }
    }

    /// Counts, keeps and logs a failed connect. bb8 hides it from `Pool::get` (which reports
    /// only `TimedOut` after `connection_timeout`), so this is where it becomes visible.
    pub(crate) fn record_connect_failure(&self, error: &Error) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
        let consecutive = self
            .consecutive_connect_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        *lock(&self.last_connect_error) = Some(error.clone());
        // bb8 retries a failed connect every 200 ms or more until `connection_timeout`: log the
        // 1st, 2nd, 4th, 8th... failure of a streak, so a persistent failure stays in the logs
        // without flooding them.
        if consecutive.is_power_of_two() {
            tracing::error!(
                username = error.username().unwrap_or_default(),
                generation = error.generation().map(Generation::get),
                consecutive_failures = consecutive,
                error = %error,
                "opening a pool connection failed; bb8 reports only a timeout to `Pool::get`"
            );
        } else {
            tracing::debug!(consecutive_failures = consecutive, error = %error, "opening a pool connection failed");
        }
    }

    pub(crate) fn note_validated_checkout(&self) {
        if !self.checkouts_validated.load(Ordering::Relaxed) {
            self.checkouts_validated.store(true, Ordering::Release);
        }
    }

    pub(crate) fn checkouts_validated(&self) -> bool {
        self.checkouts_validated.load(Ordering::Acquire)
    }

    /// A connection came back without `is_valid` having run at its checkout.
    pub(crate) fn note_unvalidated_return(&self) {
        if self.checkouts_validated() || self.warned_unvalidated.swap(true, Ordering::Relaxed) {
            // Once checkouts are known to be validated, such a connection was added with
            // `Pool::add` (a dedicated connection), which is fine.
            return;
        }
        tracing::warn!(
            "a connection was returned to the pool without `is_valid` having run at checkout: keep bb8's \
             `test_on_check_out(true)` (the default), or stale connections can be handed out and idle ones \
             are not closed at a rotation"
        );
    }

    pub(crate) fn stats(&self) -> AdapterStats {
        AdapterStats {
            generation: self.credentials.generation(),
            opened_per_generation: lock(&self.opened).clone(),
            live_per_generation: lock(&self.live).clone(),
            stale_closed: self.stale_closed.load(Ordering::Relaxed),
            stale_closed_idle: self.stale_closed_idle.load(Ordering::Relaxed),
            auth_failures: self.auth_failures.load(Ordering::Relaxed),
            auth_retries: self.auth_retries.load(Ordering::Relaxed),
            auth_retry_failures: self.auth_retry_failures.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            consecutive_connect_failures: self.consecutive_connect_failures.load(Ordering::Relaxed),
        }
    }
}

/// The adapter's counters, from [`Rotation::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdapterStats {
    /// The provider's generation when the stats were taken.
    pub generation: Generation,
    /// Physical connections opened, by the generation they authenticated with.
    pub opened_per_generation: BTreeMap<Generation, u64>,
    /// Physical connections open now (idle or busy), by generation.
    pub live_per_generation: BTreeMap<Generation, usize>,
    /// Connections closed because their generation was stale or their lease was ending: while
    /// idle, at checkout, or when returned.
    pub stale_closed: u64,
    /// Of `stale_closed`, those closed while idle by their own task, as soon as the generation
    /// changed (or the lease's retirement point passed), without waiting for a checkout.
    pub stale_closed_idle: u64,
    /// Connects refused as an authentication failure (`28P01`/`28000`).
    pub auth_failures: u64,
    /// Connects retried after an authentication failure and a refresh.
    pub auth_retries: u64,
    /// Retries that failed too.
    pub auth_retry_failures: u64,
    /// Connects that failed, for any reason (after the retry, for authentication failures).
    /// bb8 does not show these errors to `Pool::get`; see [`Rotation::last_connect_error`].
    pub connect_failures: u64,
    /// Connects that failed since the last one that succeeded: above zero, the pool cannot
    /// open connections right now.
    pub consecutive_connect_failures: u64,
}

impl AdapterStats {
    /// Connections opened over all generations.
    pub fn opened(&self) -> u64 {
        self.opened_per_generation.values().sum()
    }

    /// Connections open now over all generations.
    pub fn live(&self) -> usize {
        self.live_per_generation.values().sum()
    }
}

/// The handle of a [`RotatingConnectionManager`](crate::RotatingConnectionManager), from
/// [`rotation`](crate::RotatingConnectionManager::rotation): counters, the last connect error,
/// and the provider the pool follows. Cheap to clone; keep one beside the pool.
#[derive(Clone)]
pub struct Rotation {
    pub(crate) state: Arc<State>,
}

impl Rotation {
    /// The adapter's counters.
    pub fn stats(&self) -> AdapterStats {
        self.state.stats()
    }

    /// The error of the most recent connect that failed, kept after later successes (see
    /// [`AdapterStats::consecutive_connect_failures`] for whether connecting fails *now*).
    ///
    /// bb8 sends connect errors to its error sink and lets `Pool::get` wait until
    /// `connection_timeout`, then return `RunError::TimedOut` without the cause. This is the
    /// cause: for a wrong password, `connecting to the database as "app" (credential generation
    /// 2) failed, also after refreshing the credential: password authentication failed for user
    /// "app" (SQLSTATE 28P01)`. It names the role, never the password.
    pub fn last_connect_error(&self) -> Option<Error> {
        lock(&self.state.last_connect_error).clone()
    }

    /// The provider the pool follows.
    pub fn credentials(&self) -> &RotatingCredentials {
        &self.state.credentials
    }
}

impl fmt::Debug for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotation")
            .field("credentials", &self.state.credentials)
            .field("stats", &self.stats())
            .field("last_connect_error", &self.last_connect_error())
            .finish()
    }
}
