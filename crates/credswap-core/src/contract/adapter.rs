//! [`Adapter`]: an adapter's side of the contract, held by the adapter beside its pool.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::budget::{Budget, SLOT_WAIT_MAX, Slot};
use super::classify::Failure;
use super::connect::Connector;
use super::driver::{self, Driver};
use super::feedback::Feedback;
use super::handle::Rotation;
use super::limits::{Limits, SessionLimits};
use super::proof::{Probe, Proof};
use super::stats::{AdapterStats, Counters, Event, LiveConnection};
use super::tag::ConnectionTag;
use tokio::sync::watch;

use crate::{Generation, RotatingCredentials, Snapshot};

/// After a canary taken at a checkout or a return, how long the pool has to prove the new login
/// with its own connect before the adapter probes.
const PROBE_AFTER_BUSY_CANARY: Duration = Duration::from_millis(200);

/// What an adapter holds to make one pool follow a [`RotatingCredentials`]: the provider, the
/// adapter's counters, its proof schedule and probe, and its session budget. The adapter
/// returns [`rotation`](Self::rotation) to the application, and keeps this for its hooks.
///
/// Cheap to clone; every clone shares the same state.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use credswap_core::contract::Adapter;
/// use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
///
/// let credentials = RotatingCredentials::new(MemorySource::new(Credential::new("app", "pw")), Policy::default()).await?;
/// let adapter = Adapter::new(credentials);
/// adapter.limit_sessions(8); // the pool's max_size
/// let rotation = adapter.rotation(); // returned beside the pool
/// assert_eq!(rotation.stats().live(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Adapter {
    credentials: RotatingCredentials,
    counters: Arc<Counters>,
    proof: Arc<Proof>,
    budget: Arc<Budget>,
    limits: Arc<Limits>,
    /// The generation the pool's own connect options carry, for a pool that connects by itself.
    pool_login: Arc<watch::Sender<Generation>>,
    /// Held by the one refused checkout proving the login that works (a pool that connects
    /// by itself, see [`Connector::prove_after_refusal`]); the mutex holds how many proofs
    /// succeeded, also readable without it.
    refusals: Arc<(tokio::sync::Mutex<()>, std::sync::atomic::AtomicU64)>,
}

impl Adapter {
    /// An adapter's state over `credentials`, with zeroed counters.
    pub fn new(credentials: RotatingCredentials) -> Self {
        let generation = credentials.generation();
        Self {
            credentials,
            counters: Arc::default(),
            proof: Arc::default(),
            budget: Arc::default(),
            limits: Arc::default(),
            pool_login: Arc::new(watch::Sender::new(generation)),
            refusals: Arc::default(),
        }
    }

    /// For a pool that connects by itself with options the adapter points at a login (sqlx):
    /// records that its options carry `generation`'s login from now on.
    pub fn set_pool_login(&self, generation: Generation) {
        self.pool_login.send_replace(generation);
    }

    /// Waits until the pool's options carry `login`'s login (see
    /// [`set_pool_login`](Self::set_pool_login)), for at most `limit`; returns whether they do.
    pub async fn wait_pool_login(&self, login: &Snapshot, limit: Duration) -> bool {
        let mut carried = self.pool_login.subscribe();
        let wait = carried.wait_for(|g| login.is_same_login(*g));
        matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(_)))
    }

    /// The turn of the one refused checkout that proves the login that works.
    pub(crate) async fn refusal_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.refusals.0.lock().await
    }

    /// How many refused checkouts proved a login that works, so far.
    pub(crate) fn refusal_proofs(&self) -> u64 {
        self.refusals.1.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A refused checkout proved a login that works.
    pub(crate) fn refusal_proved(&self) {
        self.refusals
            .1
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The adapter behind a [`Rotation`] handle (for adapter code given the handle back, such
    /// as an extension trait on it).
    pub fn of(rotation: &Rotation) -> &Adapter {
        rotation.adapter()
    }

    /// The handle the adapter returns beside its pool.
    pub fn rotation(&self) -> Rotation {
        Rotation::new(self.clone())
    }

    /// A [`Connector`] for this adapter's pool; `pool_timeout` is the pool's own limit on a
    /// connect or a checkout, if it has one (see [`Connector::new`]).
    pub fn connector(&self, pool_timeout: Option<Duration>) -> Connector {
        Connector::new(self.clone(), pool_timeout)
    }

    /// The provider the pool follows.
    pub fn credentials(&self) -> &RotatingCredentials {
        &self.credentials
    }

    /// What the adapter tells the provider about logins.
    pub fn feedback(&self) -> Feedback {
        Feedback::new(&self.credentials)
    }

    /// The adapter's counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The adapter's counters, read.
    pub fn stats(&self) -> AdapterStats {
        self.counters.snapshot(&self.credentials.load())
    }

    /// Gives the pool's `max_size`: from then on the pool's connections (those opened through
    /// the [`Connector`]) and the adapter's probes share that many sessions, so a probe never
    /// takes the pool past its size (see [`budget`](super::budget)). Set once, at build;
    /// without it probes are not counted.
    pub fn limit_sessions(&self, max_size: usize) {
        self.budget.limit(max_size);
    }

    /// The session budget given by [`limit_sessions`](Self::limit_sessions).
    pub fn session_limit(&self) -> Option<usize> {
        self.budget.max_size()
    }

    /// Whether a probe (one session outside the pool) fits beside the pool now, the budget's
    /// one rule for it: nothing is waiting for a connection (`contended` false: the canary's
    /// slot stays free for the probe), or the pool's live sessions are below its size.
    pub fn probe_fits(&self, contended: bool) -> bool {
        !contended
            || self
                .session_limit()
                .is_some_and(|max| self.counters.live_total() < max)
    }

    /// Records a session the pool opened by itself (not through the [`Connector`]) with
    /// `generation`: counted as live until the returned guard is dropped, holding a slot of
    /// the session budget if one is free (so that a probe beside the pool waits for room).
    pub fn opened(&self, generation: Generation) -> LiveConnection {
        let live = self.counters.opened(generation);
        match self.budget.try_slot() {
            Some(slot) => live.holding(slot),
            None => live,
        }
    }

    /// Applies the pool's session age and connect pace, as its builder was given them (see
    /// [`limits`](super::limits)). Set once, at build.
    ///
    /// # Errors
    ///
    /// The limits are refused ([`SessionLimits::check`]).
    pub fn apply_limits(&self, limits: SessionLimits) -> Result<(), super::AdapterError> {
        limits.check()?;
        self.limits.apply(limits);
        Ok(())
    }

    /// Refuses a pool whose connect options could log in without TLS (`always_tls` false:
    /// `sslmode` below `require`) while the provider's credential requires TLS
    /// ([`Credential::requires_tls`](crate::Credential::requires_tls), an IAM auth token).
    /// Every adapter's builder calls it.
    ///
    /// # Errors
    ///
    /// [`AdapterError::is_config`](super::AdapterError::is_config), naming the role and the
    /// setting to use.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use credswap_core::contract::Adapter;
    /// use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
    ///
    /// let token = Credential::minted("iam_app", "signed-token").with_tls_required();
    /// let credentials = RotatingCredentials::new(MemorySource::new(token), Policy::default()).await?;
    /// let adapter = Adapter::new(credentials);
    /// assert!(adapter.check_tls(true).is_ok(), "sslmode=require");
    /// let refused = adapter.check_tls(false).unwrap_err();
    /// assert!(refused.is_config() && refused.to_string().contains("sslmode=require"));
    /// assert!(!refused.to_string().contains("signed-token"));
    /// # Ok(()) }
    /// ```
    pub fn check_tls(&self, always_tls: bool) -> Result<(), super::AdapterError> {
        let current = self.credentials.load();
        if always_tls || !current.credential().requires_tls() {
            return Ok(());
        }
        Err(super::AdapterError::config(
            format!(
                "the login of role {} requires TLS (an IAM authentication token), and the pool's \
                 connect options could log in without it: set sslmode=require, or verify-full \
                 with the provider's CA bundle as the root certificate",
                current.credential().username()
            ),
            None,
        ))
    }

    /// The pool's maximum session age, if it has one.
    pub fn max_session_age(&self) -> Option<Duration> {
        self.limits.max_session_age()
    }

    /// The pool's connect pace, in logins per second, if it has one.
    pub fn connect_pacing(&self) -> Option<u32> {
        self.limits.pacing()
    }

    /// Waits for a login's turn under connect pacing (at once without it). Every login the
    /// adapter makes itself waits here: the [`Connector`]'s and the probe's.
    pub async fn login_turn(&self) {
        if !self.limits.login_turn().await.is_zero() {
            self.counters.bump(Event::PacedLogin);
        }
    }

    /// For a pool that connects by itself (sqlx): records a login it made, which takes a turn
    /// under connect pacing, so the adapter's next paced action waits longer (see
    /// [`limits`](super::limits)).
    pub fn login_taken(&self) {
        self.limits.take_turn();
    }

    /// The tag of a connection about to be opened with `snapshot`, now: its generation, and
    /// the pool's session age limit (see [`limits`](super::limits)).
    pub fn tag(&self, snapshot: &Snapshot) -> ConnectionTag {
        let tag = ConnectionTag::new(snapshot);
        tag.with_age_limit(self.limits.age_limit_from(tag.opened_at()))
    }

    /// How long the adapter's watcher waits before its next sweep: [`drain::next_sweep`](super::drain::next_sweep),
    /// and often enough that an idle connection is retired within a twentieth of the maximum
    /// session age of its limit (never more often than [`drain::SWEEP`](super::drain::SWEEP)).
    pub fn next_sweep(&self, current: &Snapshot, stale_left: bool) -> Duration {
        let wait = super::drain::next_sweep(current, stale_left);
        match self.max_session_age() {
            Some(age) => wait.min((age / 20).max(super::drain::SWEEP)),
            None => wait,
        }
    }

    /// A slot of the session budget, waiting up to `wait`: `None` when none came free.
    pub(crate) async fn slot(&self, wait: Duration) -> Option<Slot> {
        self.budget.slot(wait).await
    }

    /// Gives the adapter's driver: the probe (see [`proof`](super::proof)) opens one session
    /// with it, outside the pool, and closes it. Set once; later calls change nothing.
    pub fn set_driver<D: Driver>(&self, driver: Arc<D>) {
        let probe: Probe = Arc::new(move |snapshot: Arc<Snapshot>| {
            let driver = Arc::clone(&driver);
            Box::pin(async move { driver::prove(&*driver, &snapshot).await })
        });
        self.proof.set_probe(probe);
    }

    /// Whether the adapter gave its driver.
    pub fn has_driver(&self) -> bool {
        self.proof.probe().is_some()
    }

    /// Takes a canary if one is due (see [`proof`](super::proof)) and returns the login it is
    /// for: `current`'s while it is unproven, otherwise the store's pending login while the
    /// store is rotating (a pending trial). Call it only when about to let a connection of an
    /// older login go for it.
    ///
    /// A due canary for a login the database has refused is not taken while the pool is below
    /// its size: the probe runs in the free place at once, and this returns `None` (see
    /// [`proof`](super::proof)).
    pub fn take_canary(&self, current: &Snapshot) -> Option<Arc<Snapshot>> {
        let now = tokio::time::Instant::now();
        let login = if current.is_proven() {
            let pending = self.credentials.pending_on_trial()?;
            self.proof
                .take_canary(&pending, true, now)
                .then_some(pending)?
        } else {
            if !self.proof.take_canary(current, false, now) {
                return None;
            }
            let owned = self.credentials.current();
            (owned.generation() == current.generation()).then_some(owned)?
        };
        if self.probes_in_room(&login) {
            self.spawn_probe(login, Duration::ZERO);
            return None;
        }
        Some(login)
    }

    /// Whether `login`'s next try is a probe in the pool's free place rather than a canary:
    /// the database has refused it already and the pool is below its size.
    fn probes_in_room(&self, login: &Snapshot) -> bool {
        self.credentials.is_refused(login.generation()) && self.has_room()
    }

    /// Whether the pool is below its size, so that a probe fits beside it without letting a
    /// connection go (a driver given, the size known, fewer sessions live).
    ///
    /// A canary gives up a connection that works. When the login it tries is refused and the
    /// database refuses the last proven login too (a single-user rotation that went on while
    /// the store could not be read, so the provider holds a password already replaced), nothing
    /// can replace that connection: each canary would leave the pool one connection smaller
    /// than a plain pool, until requests fail. So once the login has been refused, a pool that
    /// is not full (having lost a canary's place, or never filled) is probed in its free place
    /// instead.
    fn has_room(&self) -> bool {
        self.has_driver()
            && self
                .session_limit()
                .is_some_and(|max| self.counters.live_total() < max)
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
    /// `idle` says whether the connection is idle and a probe fits beside the pool (see
    /// [`probe_fits`](Self::probe_fits)); a canary taken for it is followed by a probe.
    pub fn should_close(&self, tag: &ConnectionTag, current: &Snapshot, idle: bool) -> bool {
        let now = tokio::time::Instant::now();
        if tag.is_aged_at(now) {
            self.counters.bump(Event::AgedOut);
            return true;
        }
        if tag.is_stale_at(current, now) {
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
            // Only a canary pays for an owned snapshot; the common verdict stays a borrow.
            let owned = self.credentials.current();
            if self.probes_in_room(&owned) {
                // Refused once, and a free place: try it there, keeping every working
                // connection.
                self.spawn_probe(owned, Duration::ZERO);
                return false;
            }
            self.counters.bump(Event::Canary);
            tracing::debug!(
                generation = current.generation().get(),
                canary = tag.generation().get(),
                "the new credential is not proven yet; retiring one connection of the last proven one to try it"
            );
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
        // for a pending trial (or, in a pool below its size, a probe runs in its free place).
        let Some(pending) = self.take_canary(current) else {
            return false;
        };
        if tag.generation() >= pending.generation() {
            return false;
        }
        self.counters.bump(Event::Canary);
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
    /// with the adapter's driver, in the background, after `delay` and only if it still needs
    /// proof then, unless a proof is already running or no driver was given. The probe takes a
    /// slot of the session budget first (or does not run). Call it after closing an idle canary.
    pub fn spawn_probe(&self, login: Arc<Snapshot>, delay: Duration) {
        if !self.has_driver() || (delay.is_zero() && !self.proof.start_probing()) {
            return;
        }
        let adapter = self.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                // The one-probe-at-a-time flag is taken after the delay: a delayed probe of a
                // login that is superseded meanwhile must not keep the next login's out.
                tokio::time::sleep(delay).await;
                if !adapter.is_canary_login(&login) || !adapter.proof.start_probing() {
                    return;
                }
            }
            // A place in the pool's session budget first: the canary's slot, unless the pool
            // filled it again meanwhile (then the probe waits for one, or gives up).
            let Some(slot) = adapter.slot(SLOT_WAIT_MAX).await else {
                adapter.counters.bump(Event::ProbeDeferred);
                tracing::debug!(
                    generation = login.generation().get(),
                    "no session left in the pool's budget for a probe; the next canary tries again"
                );
                adapter.proof.done_probing();
                return;
            };
            if slot.is_counted() && !adapter.is_canary_login(&login) {
                // Proven (or superseded) while waiting for the slot.
                adapter.proof.done_probing();
                return;
            }
            adapter.prove(&login).await;
            drop(slot);
            adapter.proof.done_probing();
        });
    }

    /// Proves `login` now with the adapter's driver, in a place the caller already holds (a
    /// canary's slot, freed by its connection), and reports the outcome to the provider:
    /// accepted, the login is proven (a pending one is published); refused, the provider hears
    /// of it. Returns whether the database accepted `login`.
    ///
    /// A pending trial (`login` newer than the current credential) logs in with the current
    /// login first, and with the pending one only if the database refuses the current one: a
    /// pending version the database never got (a stuck rotation) then costs no refused login
    /// at all, and after setSecret the trial costs the one refusal a plain pool's next connect
    /// would meet.
    pub async fn prove(&self, login: &Arc<Snapshot>) -> bool {
        let Some(probe) = self.proof.probe() else {
            return false;
        };
        let feedback = self.feedback();
        let generation = login.generation();
        let current = self.credentials.current();
        if generation > current.generation() {
            // A pending trial: the current login first.
            self.login_turn().await;
            match probe(Arc::clone(&current)).await {
                Ok(()) => {
                    feedback.report_accepted(current.generation());
                    return false;
                }
                Err(Failure::Auth) => {
                    self.counters.bump(Event::AuthFailure);
                    feedback.report_refused(current.generation());
                }
                Err(failure) => {
                    tracing::debug!(
                        generation = current.generation().get(),
                        failure = failure.as_str(),
                        "a pending trial's login with the current credential failed; the next canary tries again"
                    );
                    return false;
                }
            }
        }
        self.login_turn().await;
        match probe(Arc::clone(login)).await {
            Ok(()) => {
                if generation > self.credentials.generation() {
                    self.counters.bump(Event::PendingConnect);
                }
                feedback.report_accepted(generation);
                true
            }
            Err(Failure::Auth) => {
                if generation == self.credentials.generation() {
                    self.counters.bump(Event::AuthFailure);
                }
                feedback.report_refused(generation);
                false
            }
            Err(failure) => {
                tracing::debug!(
                    generation = generation.get(),
                    failure = failure.as_str(),
                    "proving the new credential failed; the next canary tries again"
                );
                false
            }
        }
    }
}

impl fmt::Debug for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapter")
            .field("credentials", &self.credentials)
            .field("budget", &self.budget)
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish()
    }
}
