use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use credswap_core::{Generation, RotatingCredentials, Snapshot};
use secrecy::ExposeSecret;
use tokio::sync::Notify;

use super::sqlx::postgres::{PgConnectOptions, PgPool};
use crate::GENERATION_SETTING;

/// A connection admitted less than this after an options swap counts as created before it.
///
/// `after_connect` admits a connection (its tag matched the options' generation) and sqlx then
/// stamps its creation time; a connection admitted just before a swap is stamped a few
/// microseconds later, possibly after the swap instant. The slack keeps it on the stale side.
/// Fresh connects take longer than this (TCP, a backend fork and SCRAM), so nothing current is
/// misjudged in practice; if one were, it would only be reopened.
const ADMISSION_SLACK: Duration = Duration::from_millis(1);

/// A connection created within this of a raced admission is that connection (see
/// [`Shared::admitted`]). sqlx stamps a connection's creation microseconds after `after_connect`
/// returns; a current connection created this close to a raced one is merely reopened.
const RACED_WINDOW: Duration = Duration::from_millis(2);

/// Raced admissions remembered at most (each is forgotten when its connection is closed, or
/// when a later swap covers it; sqlx can close one without telling, so the list is capped).
const RACED_MAX: usize = 64;

/// What the adapter shares between its hooks, its watcher, the retrying checkout and the handle.
///
/// It holds no pool handle: the pool's hooks hold this, so a handle here would be a cycle.
pub(crate) struct Shared {
    pub(crate) credentials: RotatingCredentials,
    /// The application's options (host, port, database, TLS, options); user and password are
    /// replaced by the provider's at every swap. Never printed: its `Debug` shows the password.
    base: PgConnectOptions,
    epoch: Instant,
    /// The generation the pool's connect options carry.
    options_generation: AtomicU64,
    /// Connections created before this instant (nanoseconds since `epoch`) are stale.
    fresh_after: AtomicU64,
    /// Serializes swaps so generations only move forward.
    swap: Mutex<()>,
    opened: Mutex<BTreeMap<Generation, u64>>,
    pub(crate) stale_closed: AtomicU64,
    pub(crate) raced_connects: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) auth_retries: AtomicU64,
    pub(crate) auth_retry_failures: AtomicU64,
    pub(crate) untagged: AtomicU64,
    pub(crate) last_swap: Mutex<Option<Instant>>,
    /// Admission instants (nanoseconds since `epoch`) of connections that authenticated with an
    /// older generation than the options carried when they were admitted.
    raced: Mutex<Vec<u64>>,
    raced_len: AtomicU64,
    /// Asks the watcher for another round of idle sweeps.
    pub(crate) sweep_requested: Notify,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Shared state over `base`, with the pool's first options built for the provider's current
    /// credential.
    pub(crate) fn new(
        credentials: RotatingCredentials,
        base: PgConnectOptions,
    ) -> (Self, PgConnectOptions) {
        let first = credentials.current();
        let shared = Self {
            options_generation: AtomicU64::new(first.generation().get()),
            credentials,
            base,
            epoch: Instant::now(),
            fresh_after: AtomicU64::new(0),
            swap: Mutex::new(()),
            opened: Mutex::default(),
            stale_closed: AtomicU64::new(0),
            raced_connects: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            auth_retries: AtomicU64::new(0),
            auth_retry_failures: AtomicU64::new(0),
            untagged: AtomicU64::new(0),
            last_swap: Mutex::new(None),
            raced: Mutex::new(Vec::new()),
            raced_len: AtomicU64::new(0),
            sweep_requested: Notify::new(),
        };
        let options = options_for(&shared.base, &first);
        (shared, options)
    }

    /// The generation the pool's connect options carry.
    pub(crate) fn options_generation(&self) -> Generation {
        Generation::new(self.options_generation.load(Ordering::SeqCst))
    }

    /// Points the pool's connect options at `snapshot`'s credential, if it is newer than what
    /// the pool uses. Returns whether it swapped.
    ///
    /// Order matters: the generation is published before the options change, so a connect that
    /// read the old options and finishes from now on is rejected by `after_connect` (its tag is
    /// older) and sqlx reconnects with the new ones; the boundary is set after, so every
    /// connection admitted with the old tag was created before it.
    pub(crate) fn swap_to(&self, pool: &PgPool, snapshot: &Snapshot) -> bool {
        let _serial = lock(&self.swap);
        let generation = snapshot.generation().get();
        if generation <= self.options_generation.load(Ordering::SeqCst) {
            return false;
        }
        self.options_generation.store(generation, Ordering::SeqCst);
        pool.set_connect_options(options_for(&self.base, snapshot));
        let boundary = self.nanos_since_epoch(Instant::now() + ADMISSION_SLACK);
        self.fresh_after.fetch_max(boundary, Ordering::SeqCst);
        *lock(&self.last_swap) = Some(Instant::now());
        tracing::debug!(
            generation,
            username = %snapshot.credential().username(),
            "pool connect options now use the new credential"
        );
        true
    }

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a pooled connection of this `age` must be closed rather than handed out or kept
    /// idle: it was created before the last swap, or its credential's lease is ending
    /// (`expires_at - expiry_margin` has passed and it was created before that point; one
    /// created later, because the store has no replacement yet, is kept rather than reopened
    /// per request).
    pub(crate) fn is_stale(&self, age: Duration) -> bool {
        let now = Instant::now();
        let created = now.checked_sub(age).unwrap_or(self.epoch);
        let created_nanos = self.nanos_since_epoch(created);
        if self.raced_len.load(Ordering::SeqCst) > 0 && self.take_raced(created_nanos) {
            return true;
        }
        if created_nanos < self.fresh_after.load(Ordering::SeqCst) {
            return true;
        }
        let current = self.credentials.current();
        current.retire_at().is_some_and(|at| {
            let at = at.into_std();
            now >= at && created < at
        })
    }

    /// Judges a new connection by the generation its server session reports.
    pub(crate) fn admit(&self, tag: Option<u64>) -> Admission {
        let required = self.options_generation.load(Ordering::SeqCst);
        match tag {
            Some(tag) => Admission {
                generation: Generation::new(tag),
                raced: tag < required,
            },
            None => {
                self.untagged.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    setting = GENERATION_SETTING,
                    "a new connection does not report its credential generation (a proxy dropped the startup option?); \
                     it is judged by age only"
                );
                Admission {
                    generation: Generation::new(required),
                    raced: false,
                }
            }
        }
    }

    /// Records a connection that enters the pool; call it last in `after_connect`, so that the
    /// instant recorded for a raced one precedes sqlx's creation stamp by microseconds.
    ///
    /// A raced connection (its connect read the options just before a swap and finished just
    /// after it) is not rejected: sqlx would log an error and reconnect, and if connects took
    /// longer than the time between swaps, no connect would ever be admitted. It serves the
    /// checkout it was opened for and is closed when returned, or by a sweep if sqlx put it
    /// straight into the idle queue: hooks recognize it by its creation instant.
    pub(crate) fn admitted(&self, admission: Admission) {
        *lock(&self.opened).entry(admission.generation).or_default() += 1;
        if !admission.raced {
            return;
        }
        self.raced_connects.fetch_add(1, Ordering::Relaxed);
        let now = self.nanos_since_epoch(Instant::now());
        let covered = self.fresh_after.load(Ordering::SeqCst);
        let window = RACED_WINDOW.as_nanos() as u64;
        let mut raced = lock(&self.raced);
        raced.retain(|at| at.saturating_add(window) >= covered);
        if raced.len() >= RACED_MAX {
            raced.remove(0);
        }
        raced.push(now);
        self.raced_len.store(raced.len() as u64, Ordering::SeqCst);
        drop(raced);
        tracing::debug!(
            generation = admission.generation.get(),
            "a connect that began before a credential swap finished after it; it is closed after its first use"
        );
        self.sweep_requested.notify_one();
    }

    /// Whether a connection created at `created` is a raced one; forgets it if so.
    fn take_raced(&self, created: u64) -> bool {
        let window = RACED_WINDOW.as_nanos() as u64;
        let mut raced = lock(&self.raced);
        let found = raced
            .iter()
            .position(|at| (*at..=at.saturating_add(window)).contains(&created));
        if let Some(index) = found {
            raced.remove(index);
            self.raced_len.store(raced.len() as u64, Ordering::SeqCst);
        }
        found.is_some()
    }

    pub(crate) fn stats(&self) -> AdapterStats {
        AdapterStats {
            generation: self.credentials.generation(),
            options_generation: self.options_generation(),
            opened_per_generation: lock(&self.opened).clone(),
            stale_closed: self.stale_closed.load(Ordering::Relaxed),
            raced_connects: self.raced_connects.load(Ordering::Relaxed),
            auth_failures: self.auth_failures.load(Ordering::Relaxed),
            auth_retries: self.auth_retries.load(Ordering::Relaxed),
            auth_retry_failures: self.auth_retry_failures.load(Ordering::Relaxed),
            untagged: self.untagged.load(Ordering::Relaxed),
        }
    }
}

/// What `after_connect` learned about a new connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission {
    generation: Generation,
    /// It authenticated with an older generation than the pool's options now carry.
    raced: bool,
}

/// The base options with the snapshot's login and generation tag.
fn options_for(base: &PgConnectOptions, snapshot: &Snapshot) -> PgConnectOptions {
    let credential = snapshot.credential();
    base.clone()
        .username(credential.username())
        // The only place the password leaves its SecretString: the driver's options.
        .password(credential.password().expose_secret())
        .options([(GENERATION_SETTING, snapshot.generation().get())])
}

/// The adapter's counters, from [`Rotation::stats`].
///
/// Unlike `credswap-deadpool`, there is no count of live connections per generation: sqlx
/// closes connections (lifetime, idle timeout, failed pings, cancelled checkouts) without
/// telling any hook, so such a count would drift. `PgPool::size` gives the live total.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdapterStats {
    /// The provider's generation when the stats were taken.
    pub generation: Generation,
    /// The generation the pool's connect options carry (equal to `generation`, or one behind
    /// for the moment between a rotation and the watcher's swap).
    pub options_generation: Generation,
    /// Physical connections opened, by the generation they authenticated with (as reported by
    /// the server session).
    pub opened_per_generation: BTreeMap<Generation, u64>,
    /// Connections closed because they were created before a swap or their lease was ending.
    pub stale_closed: u64,
    /// Connects that read the options just before a swap and finished just after it, so
    /// authenticated with the previous credential; each served the checkout it was opened for
    /// and was then closed (counted in `stale_closed` too).
    pub raced_connects: u64,
    /// Checkouts through [`RotatingPoolExt`](super::RotatingPoolExt) refused as an
    /// authentication failure (`28P01`/`28000`).
    pub auth_failures: u64,
    /// Checkouts retried after an authentication failure and a refresh.
    pub auth_retries: u64,
    /// Retries that failed too (the error reached the caller).
    pub auth_retry_failures: u64,
    /// Connections whose session did not report a generation (a proxy dropped the startup
    /// option); expected 0.
    pub untagged: u64,
}

impl AdapterStats {
    /// Connections opened over all generations.
    pub fn opened(&self) -> u64 {
        self.opened_per_generation.values().sum()
    }
}

/// The handle returned beside the pool: counters, and the provider it follows.
///
/// Dropping it changes nothing: the pool keeps following the credential.
#[derive(Clone)]
pub struct Rotation {
    pub(crate) shared: Arc<Shared>,
}

impl Rotation {
    /// The adapter's counters.
    pub fn stats(&self) -> AdapterStats {
        self.shared.stats()
    }

    /// The provider the pool follows.
    pub fn credentials(&self) -> &RotatingCredentials {
        &self.shared.credentials
    }

    /// When the pool's connect options last changed to a new credential, if they have.
    pub fn last_swap(&self) -> Option<Instant> {
        *lock(&self.shared.last_swap)
    }
}

impl fmt::Debug for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotation")
            .field("credentials", &self.shared.credentials)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Rotating pools by identity, so that [`RotatingPoolExt`](super::RotatingPoolExt) can find the
/// adapter of a plain `&PgPool`.
///
/// The key is the address of the pool's `PoolOptions`, which lives inside the pool's shared
/// allocation: stable and unique while the pool exists. An entry is removed when the pool's
/// watcher ends, and the watcher holds a pool handle until then, so an address cannot be
/// reused while its entry exists.
fn registry() -> &'static Mutex<HashMap<usize, Weak<Shared>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<usize, Weak<Shared>>>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

fn key(pool: &PgPool) -> usize {
    std::ptr::from_ref(pool.options()).addr()
}

/// The adapter of `pool`, if it is a rotating pool whose watcher runs.
pub(crate) fn lookup(pool: &PgPool) -> Option<Arc<Shared>> {
    lock(registry()).get(&key(pool)).and_then(Weak::upgrade)
}

/// Registers a pool for as long as this value lives (the watcher owns it).
pub(crate) struct Registration {
    key: usize,
}

impl Registration {
    pub(crate) fn new(pool: &PgPool, shared: &Arc<Shared>) -> Self {
        let key = key(pool);
        lock(registry()).insert(key, Arc::downgrade(shared));
        Self { key }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(registry()).remove(&self.key);
    }
}
