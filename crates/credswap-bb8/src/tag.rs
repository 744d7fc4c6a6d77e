//! How a bb8 connection carries its [`ConnectionTag`], and where the staleness rule is applied:
//! at checkout (`is_valid`), at return (`has_broken`), and by the connection's own task while it
//! is idle (see `drain`).
//!
//! The manager sees a checkout (`is_valid` marks the connection busy) and a return
//! (`has_broken` marks it idle); a new connection starts idle. Every decision to retire a
//! connection and every phase change is made under the connection's phase lock, and each reads
//! the provider's current snapshot *inside* that lock. So a connection is never closed by its
//! task while a checkout holds it, and a connection returned while the generation changes is
//! either refused by `has_broken` (which took the lock after the change was published) or
//! closed by its task (which is woken by the change after it was published, and takes the lock
//! after `has_broken` marked the connection idle).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use credswap_core::contract::budget::SERVER_EXIT_GRACE;
use credswap_core::contract::{Adapter, ConnectionTag, Counters, Event};
use credswap_core::{Generation, RotatingCredentials};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::Error;

/// A pooled tokio-postgres connection that knows which credential it authenticated with.
///
/// Derefs to [`tokio_postgres::Client`], so code written against `bb8-postgres` keeps calling
/// `conn.query(..)`, `conn.transaction()`, `conn.prepare(..)` unchanged; a function that takes a
/// `&Client` accepts `&conn` by deref coercion, and [`client`](Self::client) names it
/// explicitly (for example for `tokio_postgres::GenericClient`, which only `Client` implements).
pub struct RotatingConnection {
    client: Client,
    pub(crate) tag: Arc<Tag>,
}

impl RotatingConnection {
    pub(crate) fn new(client: Client, tag: Arc<Tag>) -> Self {
        Self { client, tag }
    }

    /// The generation of the credential this connection authenticated with.
    pub fn generation(&self) -> Generation {
        self.tag.tag.generation()
    }

    /// When the connect that opened this connection began.
    pub fn opened_at(&self) -> Instant {
        self.tag.tag.opened_at()
    }

    /// The tokio-postgres client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The tokio-postgres client, mutably (for `transaction()`).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Keeps this connection open across generation changes until it is dropped or returned to
    /// a pool; returns `false` if it was already closed.
    ///
    /// Only for a connection from `Pool::dedicated_connection` (say, a `LISTEN` session or a
    /// long migration): bb8 opens it through the same `connect` as a pooled connection that
    /// waits in the idle queue, so by default it is closed as soon as the credential rotates,
    /// like an idle one. A connection checked out with `Pool::get` needs no call: it is busy
    /// until returned.
    pub fn keep_open_on_rotation(&self) -> bool {
        let mut phase = self.tag.phase();
        if *phase == Phase::Retired {
            return false;
        }
        *phase = Phase::Busy;
        !self.client.is_closed()
    }

    pub(crate) fn client_is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

impl Drop for RotatingConnection {
    /// bb8 lets the connection go (retired, broken, or the pool dropped): its task sends the
    /// terminate message and ends a moment later; until then it counts as closing.
    fn drop(&mut self) {
        self.tag.let_go();
    }
}

impl Deref for RotatingConnection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for RotatingConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl fmt::Debug for RotatingConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingConnection")
            .field("generation", &self.generation())
            .field("opened_at", &self.opened_at())
            .field("phase", &*self.tag.phase())
            .field("closed", &self.client.is_closed())
            .finish()
    }
}

/// Where a connection is, as far as the manager can tell from bb8's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// In the pool's idle queue: new from `connect`, or returned and accepted by `has_broken`.
    Idle,
    /// Checked out: `is_valid` accepted it (or `keep_open_on_rotation`).
    Busy,
    /// Closed, or condemned, because its credential is stale. Final.
    Retired,
}

/// What a connection and its task share: its [`ConnectionTag`], its phase, and whether bb8
/// or the task let go of it first.
pub(crate) struct Tag {
    tag: ConnectionTag,
    phase: Mutex<Phase>,
    /// [`OPEN`], [`LET_GO`] (bb8 dropped it, the task still runs: counted in `closing`) or
    /// [`ENDED`] (the task ended).
    end: AtomicU8,
    closing: Arc<Closing>,
}

/// The longest a connect waits for the sessions bb8 let go of to end: normally they end within
/// a millisecond or two; one whose server is slow to answer its last query must not hold every
/// connect of the pool for long.
pub(crate) const CLOSING_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(250);

const OPEN: u8 = 0;
const LET_GO: u8 = 1;
const ENDED: u8 = 2;

/// The sessions bb8 has let go of whose task has not ended yet. bb8 counts a connection out of
/// the pool the moment it drops it, and opens its replacement at once, while the dropped
/// connection's task is still sending the terminate message: for that moment the server sees
/// `max_size + 1` sessions of the pool. A pool built by [`Builder`](crate::Builder) knows its
/// size and holds a budget slot until [`SERVER_EXIT_GRACE`] after the task ends; a manager
/// handed to `bb8::Pool::builder()` does not, and its connects wait (at most
/// [`CLOSING_WAIT_MAX`]) for the closing sessions instead (see [`wait_closed`](Self::wait_closed)).
#[derive(Debug)]
pub(crate) struct Closing(watch::Sender<usize>);

impl Default for Closing {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

impl Closing {
    /// Waits, at most `limit`, until no session bb8 let go of is still ending.
    pub(crate) async fn wait_closed(&self, limit: std::time::Duration) {
        let mut closing = self.0.subscribe();
        let _ = tokio::time::timeout(limit, closing.wait_for(|n| *n == 0)).await;
    }

    fn release(&self) {
        self.0.send_modify(|n| {
            debug_assert!(*n > 0, "a closing count given back twice");
            *n = n.saturating_sub(1);
        });
    }
}

/// One closing session's count, given back when dropped.
struct Release(Arc<Closing>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Held by a connection's task: when the task ends, or is dropped unfinished (a runtime shut
/// down under it), the connection has ended.
pub(crate) struct EndGuard(pub(crate) Arc<Tag>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// What the manager shares with its connections' tasks: the handle (provider and counters), and
/// whether bb8 validates checkouts.
pub(crate) struct Shared {
    adapter: Adapter,
    /// Set by the first `is_valid` call: proof that bb8 validates every checkout
    /// (`test_on_check_out`, bb8's default), so a connection not marked busy is really idle and
    /// may be closed by its own task.
    checkouts_validated: AtomicBool,
    warned_unvalidated: AtomicBool,
    /// Connections checked out now.
    busy: AtomicUsize,
    /// Sessions bb8 let go of, still ending.
    closing: Arc<Closing>,
}

impl Shared {
    pub(crate) fn new(adapter: Adapter) -> Self {
        Self {
            adapter,
            checkouts_validated: AtomicBool::new(false),
            warned_unvalidated: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            closing: Arc::default(),
        }
    }

    /// The sessions bb8 let go of that are still ending.
    pub(crate) fn closing(&self) -> &Arc<Closing> {
        &self.closing
    }

    /// The adapter's state.
    pub(crate) fn adapter(&self) -> &Adapter {
        &self.adapter
    }

    /// Whether a probe (one connection outside the pool) may run after an idle canary without
    /// the pool and the probe together passing `max_size` ([`Adapter::probe_fits`]; bb8 does
    /// not say whether anyone waits, so a connection checked out counts as contention).
    fn quiet(&self) -> bool {
        self.adapter
            .probe_fits(self.busy.load(Ordering::Acquire) > 0)
    }

    pub(crate) fn credentials(&self) -> &RotatingCredentials {
        self.adapter.credentials()
    }

    /// Whether the pools are trying the store's pending credential now (see
    /// [`Adapter::is_trying_pending`]).
    pub(crate) fn is_trying_pending(&self) -> bool {
        self.adapter.is_trying_pending()
    }

    fn counters(&self) -> &Counters {
        self.adapter.counters()
    }

    fn checkouts_validated(&self) -> bool {
        self.checkouts_validated.load(Ordering::Acquire)
    }

    /// A connection came back without `is_valid` having run at its checkout.
    fn note_unvalidated_return(&self) {
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

    /// Counts a connection retired as stale.
    fn retired(&self, idle: bool) {
        self.counters().bump(Event::StaleClosed);
        if idle {
            self.counters().bump(Event::StaleClosedIdle);
        }
    }
}

impl Tag {
    pub(crate) fn new(tag: ConnectionTag, closing: Arc<Closing>) -> Self {
        Self {
            tag,
            phase: Mutex::new(Phase::Idle),
            end: AtomicU8::new(OPEN),
            closing,
        }
    }

    /// bb8 dropped the connection: closing until its task ends. Counted before the state
    /// changes (and taken back if the task ended first), so the task's end can never take
    /// back a count not yet made.
    fn let_go(&self) {
        self.closing.0.send_modify(|n| *n += 1);
        if self
            .end
            .compare_exchange(OPEN, LET_GO, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            self.closing.release();
        }
    }

    /// The connection's task ended (or was dropped): the session is closed, and ended at the
    /// server a moment later ([`SERVER_EXIT_GRACE`], as a budget slot). Called from the
    /// task's [`EndGuard`], so a task dropped at a runtime's shutdown also gives its count
    /// back.
    fn ended(&self) {
        if self.end.swap(ENDED, Ordering::AcqRel) != LET_GO {
            return;
        }
        let release = Release(Arc::clone(&self.closing));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // Dropped unrun at a runtime's shutdown, the release still counts down.
            runtime.spawn(async move {
                tokio::time::sleep(SERVER_EXIT_GRACE).await;
                drop(release);
            });
        }
    }

    pub(crate) fn generation(&self) -> Generation {
        self.tag.generation()
    }

    /// When the connection reaches the pool's maximum session age, if it has one.
    pub(crate) fn age_limit(&self) -> Option<tokio::time::Instant> {
        self.tag.age_limit()
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `is_valid`: accepts the connection as checked out, or refuses it as stale.
    pub(crate) fn check_out(&self, shared: &Shared) -> Result<(), Error> {
        if !shared.checkouts_validated.load(Ordering::Relaxed) {
            shared.checkouts_validated.store(true, Ordering::Release);
        }
        let mut phase = self.phase();
        let current = shared.credentials().load();
        let stale = || Error::stale(self.tag.generation(), current.generation());
        if *phase == Phase::Retired {
            return Err(stale());
        }
        if shared.adapter.should_close(&self.tag, &current, false) {
            *phase = Phase::Retired;
            shared.retired(false);
            return Err(stale());
        }
        if *phase != Phase::Busy {
            shared.busy.fetch_add(1, Ordering::AcqRel);
        }
        *phase = Phase::Busy;
        Ok(())
    }

    /// `has_broken`: whether a returned connection must be closed (closed, or stale); else it
    /// goes back to the idle queue.
    pub(crate) fn check_in(&self, client_closed: bool, shared: &Shared) -> bool {
        let mut phase = self.phase();
        match *phase {
            Phase::Retired => return true,
            Phase::Idle => shared.note_unvalidated_return(),
            Phase::Busy => {
                // Saturating: a dedicated connection is marked busy without being counted.
                let _ = shared
                    .busy
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        Some(n.saturating_sub(1))
                    });
            }
        }
        if shared
            .adapter
            .should_close(&self.tag, &shared.credentials().load(), false)
        {
            *phase = Phase::Retired;
            shared.retired(false);
            return true;
        }
        if client_closed {
            *phase = Phase::Retired;
            return true;
        }
        *phase = Phase::Idle;
        false
    }

    /// The connection's own task: retires the connection if it is idle and stale. Only once
    /// checkouts are known to be validated: with `test_on_check_out(false)` an idle connection
    /// cannot be told from a busy one, and a busy one is never closed under its user.
    pub(crate) fn retire_if_idle(&self, shared: &Shared) -> bool {
        let mut phase = self.phase();
        // A canary taken for an idle connection is followed by a probe only when the probe
        // cannot take the pool past its size.
        let quiet = shared.quiet();
        if *phase != Phase::Idle
            || !shared.checkouts_validated()
            || !shared
                .adapter
                .should_close(&self.tag, &shared.credentials().load(), quiet)
        {
            return false;
        }
        *phase = Phase::Retired;
        shared.retired(true);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use credswap_core::contract::Feedback;
    use credswap_core::{Credential, MemorySource, Policy};

    use super::*;

    /// bb8 lets a connection go before its task ends (a stale one on return): it counts as
    /// closing until the task's end and the grace after it; one whose task ended first (retired
    /// while idle) never counts; a task dropped unfinished gives its count back too.
    #[tokio::test]
    async fn a_connection_let_go_counts_as_closing_until_its_task_ended_and_the_grace() {
        let store = MemorySource::new(Credential::new("app", "first"));
        let credentials = RotatingCredentials::new(store, Policy::default())
            .await
            .unwrap();
        let closing = Arc::new(Closing::default());
        let count = || *closing.0.borrow();
        let tag = || {
            Arc::new(Tag::new(
                ConnectionTag::new(&credentials.current()),
                Arc::clone(&closing),
            ))
        };

        let let_go_first = tag();
        let_go_first.let_go();
        assert_eq!(count(), 1);
        drop(EndGuard(Arc::clone(&let_go_first)));
        assert_eq!(count(), 1, "the server's exit is given its grace");
        tokio::time::sleep(SERVER_EXIT_GRACE * 5).await;
        assert_eq!(count(), 0);
        let_go_first.let_go();
        assert_eq!(count(), 0, "let go twice counts once");

        let ended_first = tag();
        drop(EndGuard(Arc::clone(&ended_first)));
        ended_first.let_go();
        assert_eq!(count(), 0, "a task that ended first leaves nothing closing");

        // A task dropped before it ran to its end (a runtime shutting down under it).
        let dropped = tag();
        dropped.let_go();
        let guard = EndGuard(Arc::clone(&dropped));
        let task = tokio::spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        task.abort();
        let _ = task.await;
        tokio::time::sleep(SERVER_EXIT_GRACE * 5).await;
        assert_eq!(count(), 0);
        let waited = tokio::time::Instant::now();
        closing.wait_closed(CLOSING_WAIT_MAX).await;
        assert!(
            waited.elapsed() < CLOSING_WAIT_MAX / 2,
            "nothing closing: no wait"
        );
    }

    /// A connection returned while a rotation is published: `has_broken` waits for the phase
    /// lock (held here, as the connection's task holds it while it looks at the connection),
    /// the rotation is published meanwhile, and `has_broken` must judge the connection against
    /// the new generation. Reading the generation before taking the lock judged it against the
    /// old one, and left an idle connection of the old credential in the pool.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::await_holding_lock)] // on purpose: the rotation happens while it is held
    async fn a_return_judges_by_the_generation_current_when_it_holds_the_lock() {
        let store = MemorySource::new(Credential::new("app", "first"));
        let credentials = RotatingCredentials::new(store.clone(), Policy::default())
            .await
            .unwrap();
        let shared = Arc::new(Shared::new(Adapter::new(credentials.clone())));
        let tag = Arc::new(Tag::new(
            ConnectionTag::new(&credentials.current()),
            Arc::default(),
        ));
        tag.check_out(&shared).unwrap();

        let held = tag.phase();
        let returned = std::thread::spawn({
            let (tag, shared) = (Arc::clone(&tag), Arc::clone(&shared));
            move || tag.check_in(false, &shared)
        });
        // Let the return reach the lock, then rotate while it waits there.
        std::thread::sleep(Duration::from_millis(50));
        store.set(Credential::new("app", "second"));
        let second = credentials.refresh().await.unwrap();
        // A connection with it opened elsewhere: the new login is proven.
        Feedback::new(&credentials).report_accepted(second.generation());
        drop(held);

        assert!(
            returned.join().unwrap(),
            "a connection of generation 1 returned after generation 2 was published was kept"
        );
        assert_eq!(*tag.phase(), Phase::Retired);
        assert_eq!(shared.adapter.stats().stale_closed, 1);
    }

    #[tokio::test]
    async fn busy_connections_are_left_to_their_user_and_idle_stale_ones_retired() {
        let store = MemorySource::new(Credential::new("app", "first"));
        let credentials = RotatingCredentials::new(store.clone(), Policy::default())
            .await
            .unwrap();
        let shared = Shared::new(Adapter::new(credentials.clone()));
        let (busy, idle) = (
            Tag::new(ConnectionTag::new(&credentials.current()), Arc::default()),
            Tag::new(ConnectionTag::new(&credentials.current()), Arc::default()),
        );
        // Each new login is accepted by the database (a connection with it opened elsewhere).
        let rotate = |password: &'static str| {
            let (store, credentials) = (store.clone(), credentials.clone());
            async move {
                store.set(Credential::new("app", password));
                let next = credentials.refresh().await.unwrap();
                Feedback::new(&credentials).report_accepted(next.generation());
            }
        };
        // Nothing is retired before a checkout has shown that bb8 validates checkouts.
        rotate("second").await;
        assert!(!idle.retire_if_idle(&shared));
        assert!(busy.check_out(&shared).unwrap_err().is_stale());

        let fresh = Tag::new(ConnectionTag::new(&credentials.current()), Arc::default());
        fresh.check_out(&shared).unwrap();
        rotate("third").await;
        assert!(!fresh.retire_if_idle(&shared), "busy");
        assert!(idle.retire_if_idle(&shared));
        assert!(fresh.check_in(false, &shared), "stale on return");
        assert!(idle.check_out(&shared).unwrap_err().is_stale());
        let stats = shared.adapter.stats();
        assert_eq!((stats.stale_closed, stats.stale_closed_idle), (3, 1));
    }
}
