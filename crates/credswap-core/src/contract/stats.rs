//! [`AdapterStats`]: what every adapter counts, and the [`Counters`] behind them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::budget::Slot;
use crate::{Generation, Snapshot};

/// Whether the staleness rule retires connections that logged in with `generation`, judged
/// against `current` at the generation level (see
/// [`ConnectionTag::is_stale`](super::ConnectionTag::is_stale)): an older login than the
/// current one, once a newer login has been proven.
pub fn is_stale_generation(generation: Generation, current: &Snapshot) -> bool {
    !current.is_same_login(generation)
        && generation < current.proven_generation()
        && !current.is_proven_login(generation)
}

/// Per-generation counts are kept for this many of the newest generations (and for any
/// older generation that still has live connections), so the maps stay small however many
/// rotations a long-running process sees.
pub const GENERATIONS_KEPT: usize = 8;

/// What an adapter counts: one variant per [`AdapterStats`] counter, named after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// A connection closed because its credential was stale or its lease was ending
    /// ([`AdapterStats::stale_closed`]).
    StaleClosed,
    /// Of those, one closed while idle ([`AdapterStats::stale_closed_idle`]).
    StaleClosedIdle,
    /// A connect attempt refused as an authentication failure ([`AdapterStats::auth_failures`]).
    AuthFailure,
    /// A connect attempt made again after a refused login ([`AdapterStats::auth_retries`]).
    AuthRetry,
    /// A connect attempt made again after a transient failure
    /// ([`AdapterStats::connect_retries`]).
    ConnectRetry,
    /// A connect that failed for good ([`AdapterStats::connect_failures`]).
    ConnectFailure,
    /// A connect that began under one credential and finished after a rotation
    /// ([`AdapterStats::raced_connects`]).
    RacedConnect,
    /// A connection whose generation could not be recorded ([`AdapterStats::untagged`]).
    Untagged,
    /// A connection let go as a canary ([`AdapterStats::canaries`]).
    Canary,
    /// A connect that fell back to the last proven login ([`AdapterStats::fallback_connects`]).
    FallbackConnect,
    /// A connection or probe opened with the store's pending credential
    /// ([`AdapterStats::pending_connects`]).
    PendingConnect,
    /// A connect that opened beyond the session budget ([`AdapterStats::over_budget`]).
    OverBudget,
    /// A probe skipped for want of a budget slot ([`AdapterStats::probes_deferred`]).
    ProbeDeferred,
    /// A connection retired at the pool's maximum session age ([`AdapterStats::aged_out`]).
    AgedOut,
    /// A login that waited for its turn under connect pacing ([`AdapterStats::paced_logins`]).
    PacedLogin,
}

impl Event {
    const ALL: usize = 15;

    fn index(self) -> usize {
        self as usize
    }
}

/// The counters of one adapter (one pool). Shared by the adapter's connector, hooks and
/// watcher; written with [`add`](Self::add), read through
/// [`Rotation::stats`](super::Rotation::stats).
#[derive(Default)]
pub struct Counters {
    opened: AtomicU64,
    per_generation: Mutex<BTreeMap<Generation, PerGeneration>>,
    events: [AtomicU64; Event::ALL],
}

#[derive(Debug, Default, Clone, Copy)]
struct PerGeneration {
    opened: u64,
    live: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Counters {
    /// Counts one `event`.
    pub fn bump(&self, event: Event) {
        self.add(event, 1);
    }

    /// Counts `n` of `event`.
    pub fn add(&self, event: Event, n: u64) {
        self.events[event.index()].fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self, event: Event) -> u64 {
        self.events[event.index()].load(Ordering::Relaxed)
    }

    /// Records a physical connection opened with `generation`; it counts as live until the
    /// returned guard is dropped (adapters keep the guard wherever the connection's life ends:
    /// its driver task).
    pub fn opened(self: &Arc<Self>, generation: Generation) -> LiveConnection {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let mut map = lock(&self.per_generation);
        let entry = map.entry(generation).or_default();
        entry.opened += 1;
        entry.live += 1;
        trim(&mut map);
        LiveConnection {
            counters: Arc::clone(self),
            generation,
            slot: Slot::default(),
        }
    }

    fn gone(&self, generation: Generation) {
        let mut map = lock(&self.per_generation);
        if let Some(entry) = map.get_mut(&generation) {
            entry.live = entry.live.saturating_sub(1);
        }
        trim(&mut map);
    }

    /// Live connections over all generations.
    pub fn live_total(&self) -> usize {
        lock(&self.per_generation).values().map(|c| c.live).sum()
    }

    /// Live connections that the staleness rule retires against `current`: those of an older
    /// login once a newer one is proven (see [`is_stale_generation`]). Connections the rule
    /// keeps on purpose (the last proven login while a new one is unproven, an earlier
    /// generation with the same login, a pending trial's) are not stale.
    pub fn live_stale(&self, current: &Snapshot) -> usize {
        lock(&self.per_generation)
            .iter()
            .filter(|(g, _)| is_stale_generation(**g, current))
            .map(|(_, c)| c.live)
            .sum()
    }

    /// A snapshot of the counters against the provider's `current` snapshot.
    pub fn snapshot(&self, current: &Snapshot) -> AdapterStats {
        self.collect(current.generation(), |g| is_stale_generation(g, current))
    }

    fn collect(
        &self,
        generation: Generation,
        is_stale: impl Fn(Generation) -> bool,
    ) -> AdapterStats {
        let map = lock(&self.per_generation);
        AdapterStats {
            generation,
            stale_live: map
                .iter()
                .filter(|(g, _)| is_stale(**g))
                .map(|(_, c)| c.live)
                .sum(),
            opened: self.opened.load(Ordering::Relaxed),
            opened_per_generation: map.iter().map(|(g, c)| (*g, c.opened)).collect(),
            live_per_generation: map
                .iter()
                .filter(|(_, c)| c.live > 0)
                .map(|(g, c)| (*g, c.live))
                .collect(),
            stale_closed: self.get(Event::StaleClosed),
            stale_closed_idle: self.get(Event::StaleClosedIdle),
            auth_failures: self.get(Event::AuthFailure),
            auth_retries: self.get(Event::AuthRetry),
            connect_retries: self.get(Event::ConnectRetry),
            connect_failures: self.get(Event::ConnectFailure),
            raced_connects: self.get(Event::RacedConnect),
            untagged: self.get(Event::Untagged),
            canaries: self.get(Event::Canary),
            fallback_connects: self.get(Event::FallbackConnect),
            pending_connects: self.get(Event::PendingConnect),
            over_budget: self.get(Event::OverBudget),
            probes_deferred: self.get(Event::ProbeDeferred),
            aged_out: self.get(Event::AgedOut),
            paced_logins: self.get(Event::PacedLogin),
        }
    }
}

/// Drops the entries of old generations that have no live connection, beyond the newest
/// [`GENERATIONS_KEPT`].
fn trim(map: &mut BTreeMap<Generation, PerGeneration>) {
    while map.len() > GENERATIONS_KEPT {
        let Some(oldest_idle) = map
            .iter()
            .take(map.len() - GENERATIONS_KEPT)
            .find(|(_, c)| c.live == 0)
            .map(|(g, _)| *g)
        else {
            return;
        };
        map.remove(&oldest_idle);
    }
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.collect(Generation::new(0), |_| false), f)
    }
}

/// A live physical connection, for the live counts: drop it when the connection ends.
pub struct LiveConnection {
    counters: Arc<Counters>,
    generation: Generation,
    /// The connection's place in the pool's session budget, given back with it.
    slot: Slot,
}

impl LiveConnection {
    /// The generation the connection authenticated with.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The same, holding `slot` of the pool's session budget until it is dropped.
    pub(crate) fn holding(mut self, slot: Slot) -> Self {
        self.slot = slot;
        self
    }
}

impl Drop for LiveConnection {
    /// The live count drops at once; the budget slot [`SERVER_EXIT_GRACE`] later (see
    /// [`budget`](super::budget)), or at once outside a tokio runtime.
    ///
    /// [`SERVER_EXIT_GRACE`]: super::budget::SERVER_EXIT_GRACE
    fn drop(&mut self) {
        self.counters.gone(self.generation);
        let slot = std::mem::take(&mut self.slot);
        if slot.is_counted()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                tokio::time::sleep(super::budget::SERVER_EXIT_GRACE).await;
                drop(slot);
            });
        }
    }
}

impl fmt::Debug for LiveConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveConnection")
            .field("generation", &self.generation)
            .field("slot", &self.slot)
            .finish()
    }
}

/// An adapter's counters, from [`Rotation::stats`](super::Rotation::stats). The same fields
/// for every pool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdapterStats {
    /// The provider's generation when the stats were taken.
    pub generation: Generation,
    /// Physical connections opened, over all generations.
    pub opened: u64,
    /// Physical connections opened, by the generation they authenticated with (the newest
    /// generations only; see [`GENERATIONS_KEPT`]).
    pub opened_per_generation: BTreeMap<Generation, u64>,
    /// Physical connections alive now (idle or busy), by generation.
    pub live_per_generation: BTreeMap<Generation, usize>,
    /// Connections closed because their credential was stale or their lease was ending.
    pub stale_closed: u64,
    /// Of those, closed while idle.
    pub stale_closed_idle: u64,
    /// Connect attempts refused as an authentication failure (`28P01`/`28000`).
    pub auth_failures: u64,
    /// Connect attempts made again after a refused login.
    pub auth_retries: u64,
    /// Connect attempts made again after a transient failure.
    pub connect_retries: u64,
    /// Connects that failed for good (after the deadline, or a fatal error).
    pub connect_failures: u64,
    /// Connects that began under one credential and finished after a rotation.
    pub raced_connects: u64,
    /// Connections whose generation could not be recorded (expected 0).
    pub untagged: u64,
    /// Connections let go as canaries while a new login was unproven.
    pub canaries: u64,
    /// Connects that fell back to the last proven login after the new one was refused.
    pub fallback_connects: u64,
    /// Connections (and probes) opened with the store's pending credential before the store
    /// made it current, after the current one was refused or as a pending trial; the provider
    /// published it once one opened.
    pub pending_connects: u64,
    /// Connects that opened beyond the pool's session budget after waiting for a slot
    /// (expected 0: the pool and its probes stay within `max_size`).
    pub over_budget: u64,
    /// Probes that did not run because every slot of the budget was in use; the next canary
    /// tries again.
    pub probes_deferred: u64,
    /// Of the connections closed as stale, those retired at the pool's maximum session age
    /// (see [`limits`](super::limits)).
    pub aged_out: u64,
    /// Logins that waited for their turn under connect pacing (see [`limits`](super::limits)).
    pub paced_logins: u64,
    /// Live connections the staleness rule retires (see [`live_stale`](Self::live_stale)).
    stale_live: usize,
}

impl AdapterStats {
    /// Live connections the staleness rule retires: of an older login than the current one,
    /// once a newer login has been proven. What `credswap_pool_stale_connections` reports
    /// and what a drain still has to close; connections the rule keeps on purpose (the last
    /// proven login while a new one is unproven, an earlier generation with the current login
    /// after the store flipped back, a pending trial's) do not count. (A connection whose own
    /// lease has ended is retired too, at its retirement point; it is counted here only once
    /// a newer login is proven.)
    pub fn live_stale(&self) -> usize {
        self.stale_live
    }

    /// Live connections over all generations.
    pub fn live(&self) -> usize {
        self.live_per_generation.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_guards_count_and_old_generations_are_forgotten() {
        let counters = Arc::new(Counters::default());
        let kept = counters.opened(Generation::new(1));
        let mut guards = Vec::new();
        for g in 2..=40 {
            guards.push(counters.opened(Generation::new(g)));
            guards.pop();
        }
        // Generation 40, proven: every older login is stale.
        let proven = crate::snapshot::Proven::at(Generation::new(40));
        let current = Snapshot::new(
            crate::Credential::new("app", "pw"),
            Generation::new(40),
            tokio::time::Instant::now(),
            &crate::Policy::default(),
            &proven,
        );
        let stats = counters.snapshot(&current);
        assert_eq!(stats.opened, 40);
        assert_eq!(stats.live_per_generation.len(), 1, "{stats:?}");
        assert_eq!(stats.live_stale(), 1);
        assert!(
            stats.opened_per_generation.len() <= GENERATIONS_KEPT + 1,
            "{stats:?}"
        );
        assert!(
            stats
                .opened_per_generation
                .contains_key(&Generation::new(1))
        );
        drop(kept);
        counters.opened(Generation::new(41));
        let next = Snapshot::new(
            crate::Credential::new("app", "pw2"),
            Generation::new(41),
            tokio::time::Instant::now(),
            &crate::Policy::default(),
            &proven,
        );
        let stats = counters.snapshot(&next);
        assert_eq!(stats.live(), 0);
        assert!(
            !stats
                .opened_per_generation
                .contains_key(&Generation::new(1))
        );
    }
}
