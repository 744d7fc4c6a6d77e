use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use credswap_core::{Generation, RotatingCredentials, Snapshot};
use deadpool_postgres::{ClientWrapper, Metrics, StatementCache};
use tokio::time::Instant;

/// The generation a connection authenticated with, keyed by the connection's statement cache:
/// the one `Arc` a `ClientWrapper` owns for its whole life. Holding a `Weak` to it keeps the
/// address from being reused while the entry exists, so the key is exact.
#[derive(Default)]
pub(crate) struct Tags {
    map: HashMap<usize, (Weak<StatementCache>, Generation)>,
}

/// Marks a connection whose generation could not be recorded: it is treated as stale, so it
/// serves the checkout that created it and is closed when returned. Fail safe, never observed
/// with the deadpool versions this crate supports (see `connect::HANDOFF`).
pub(crate) const UNKNOWN: Generation = Generation::new(0);

fn key(wrapper: &ClientWrapper) -> usize {
    Arc::as_ptr(&wrapper.statement_cache) as usize
}

impl Tags {
    fn insert(&mut self, wrapper: &ClientWrapper, generation: Generation) {
        if self.map.len() >= 64 && self.map.len().is_power_of_two() {
            self.map.retain(|_, (weak, _)| weak.strong_count() > 0);
        }
        self.map.insert(
            key(wrapper),
            (Arc::downgrade(&wrapper.statement_cache), generation),
        );
    }

    fn get(&self, wrapper: &ClientWrapper) -> Generation {
        match self.map.get(&key(wrapper)) {
            Some((weak, generation)) if weak.as_ptr() == Arc::as_ptr(&wrapper.statement_cache) => {
                *generation
            }
            _ => UNKNOWN,
        }
    }

    /// Live connections per generation (a connection is live while its wrapper exists).
    fn live(&mut self) -> BTreeMap<Generation, usize> {
        self.map.retain(|_, (weak, _)| weak.strong_count() > 0);
        let mut counts = BTreeMap::new();
        for (_, generation) in self.map.values() {
            *counts.entry(*generation).or_default() += 1;
        }
        counts
    }
}

/// What the adapter shares between its connector, its hooks, its watcher and the handle.
pub(crate) struct State {
    pub(crate) credentials: RotatingCredentials,
    tags: Mutex<Tags>,
    opened: Mutex<BTreeMap<Generation, u64>>,
    pub(crate) stale_closed: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) auth_retries: AtomicU64,
    pub(crate) auth_retry_failures: AtomicU64,
    pub(crate) untagged: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    pub(crate) fn new(credentials: RotatingCredentials) -> Self {
        Self {
            credentials,
            tags: Mutex::default(),
            opened: Mutex::default(),
            stale_closed: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            auth_retries: AtomicU64::new(0),
            auth_retry_failures: AtomicU64::new(0),
            untagged: AtomicU64::new(0),
        }
    }

    pub(crate) fn record_open(&self, generation: Generation) {
        *lock(&self.opened).entry(generation).or_default() += 1;
    }

    pub(crate) fn tag(&self, wrapper: &ClientWrapper, generation: Option<Generation>) {
        let generation = generation.unwrap_or_else(|| {
            self.untagged.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("a new connection could not be tagged with its generation; it will be closed when returned");
            UNKNOWN
        });
        lock(&self.tags).insert(wrapper, generation);
    }

    pub(crate) fn generation_of(&self, wrapper: &ClientWrapper) -> Generation {
        lock(&self.tags).get(wrapper)
    }

    /// Whether this connection must be closed rather than handed out or kept idle: it
    /// authenticated with an older generation, or its credential's lease is ending
    /// (`expires_at - expiry_margin` has passed and it was opened before that point; one opened
    /// later, because the store has no replacement yet, is kept rather than reopened per request).
    pub(crate) fn is_stale(
        &self,
        wrapper: &ClientWrapper,
        metrics: &Metrics,
        current: &Snapshot,
    ) -> bool {
        if self.generation_of(wrapper) != current.generation() {
            return true;
        }
        current
            .retire_at()
            .is_some_and(|at| Instant::now() >= at && metrics.created < at.into_std())
    }

    /// Live connections whose generation is older than `current`'s (busy ones, after a sweep).
    pub(crate) fn live_stale(&self, current: &Snapshot) -> usize {
        lock(&self.tags)
            .live()
            .into_iter()
            .filter(|(generation, _)| *generation != current.generation())
            .map(|(_, n)| n)
            .sum()
    }

    pub(crate) fn stats(&self) -> AdapterStats {
        AdapterStats {
            generation: self.credentials.generation(),
            opened_per_generation: lock(&self.opened).clone(),
            live_per_generation: lock(&self.tags).live(),
            stale_closed: self.stale_closed.load(Ordering::Relaxed),
            auth_failures: self.auth_failures.load(Ordering::Relaxed),
            auth_retries: self.auth_retries.load(Ordering::Relaxed),
            auth_retry_failures: self.auth_retry_failures.load(Ordering::Relaxed),
            untagged: self.untagged.load(Ordering::Relaxed),
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
    /// Physical connections alive now (idle or busy), by generation.
    pub live_per_generation: BTreeMap<Generation, usize>,
    /// Connections closed because their generation was stale or their lease was ending.
    pub stale_closed: u64,
    /// Connects refused as an authentication failure (`28P01`/`28000`).
    pub auth_failures: u64,
    /// Connects retried after an authentication failure and a refresh.
    pub auth_retries: u64,
    /// Retries that failed too (the error reached the caller of `Pool::get`).
    pub auth_retry_failures: u64,
    /// Connections whose generation could not be recorded (closed on return; expected 0).
    pub untagged: u64,
}

impl AdapterStats {
    /// Connections opened over all generations.
    pub fn opened(&self) -> u64 {
        self.opened_per_generation.values().sum()
    }
}

/// The handle returned beside the pool: counters, and the provider it follows.
#[derive(Clone)]
pub struct Rotation {
    pub(crate) state: Arc<State>,
}

impl Rotation {
    /// The adapter's counters.
    pub fn stats(&self) -> AdapterStats {
        self.state.stats()
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
            .finish()
    }
}
