//! [`Connector`]: the one connect routine every adapter wraps around its driver.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::adapter::Adapter;
use super::budget::{SLOT_WAIT_MAX, Slot};
use super::classify::Failure;
use super::driver::Driver;
use super::stats::{Event, LiveConnection};
use super::tag::ConnectionTag;
use crate::provider::AUTH_REFRESH_MAX;
use crate::{Generation, Snapshot};

mod refused;
pub use refused::Refused;

/// The first wait after a refused or transiently failed connect; it doubles up to
/// [`RETRY_MAX`].
pub const RETRY_INITIAL: Duration = Duration::from_millis(20);

/// The longest wait between two connect attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(1);

/// How long a connect in a burst of refusals that has outlived its deadline keeps going after
/// the store's next answer is due: the fetch itself, and the answer after it (one
/// [`AUTH_REFRESH_MAX`] later), so that a secret fixed just after an answer is still seen by
/// the connect a pool is waiting on (bb8 starts no other connect for its waiters meanwhile).
const NEXT_ANSWER_GRACE: Duration = AUTH_REFRESH_MAX.saturating_add(Duration::from_millis(500));

/// The most a connector's deadline stays short of the pool's own timeout.
pub const POOL_TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

/// Opens connections with the current credential and follows it through refusals.
///
/// [`connect`](Self::connect) reads the provider's current snapshot, tags the attempt with its
/// generation, and opens a session with its login through the adapter's [`Driver`]. Then, by the [`Failure`] class of the
/// driver's error:
///
/// - **refused login** (`28P01`, `28000`): the store's pending credential, when the provider
///   holds one, is tried at once, before the store is asked again; otherwise (or when that is
///   refused too) reports it to the provider, which refreshes from the store (single-flight,
///   and at most once per `auth_refresh_interval`); a newer credential is tried at once; a credential the database never accepted falls back, once, to the last one
///   it did (a mistyped secret must not stop the pool); otherwise the connect waits for a change or a backoff step (20 ms doubling
///   to 1 s), asks the store again and retries, until the deadline;
/// - **transient** (connection refused, `57P03`, `53300`, ...): backs off and retries until the
///   deadline;
/// - **fatal**: fails at once.
///
/// The deadline is a little under the pool's own connect or wait timeout where the adapter knows
/// it, otherwise the policy's `connect_deadline`. A refused login is always retried once with a newer
/// credential the provider hands back, even past the deadline. A connect that fails for good
/// is logged here, once, at `WARN`; adapters do not log it again.
#[derive(Clone)]
pub struct Connector {
    adapter: Adapter,
    deadline: Duration,
}

/// A connection opened by [`Connector::connect`].
#[derive(Debug)]
pub struct Connected<T> {
    /// The driver's connection.
    pub connection: T,
    /// Its generation and opening instant.
    pub tag: ConnectionTag,
    /// Counts it as live until dropped: keep it where the connection's life ends.
    pub live: LiveConnection,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector for `adapter`'s pool (also [`Adapter::connector`]). `pool_timeout` is the pool's own limit on
    /// a connect or a checkout, if it has one: the connector gives up a little before it (a
    /// tenth of it, at most [`POOL_TIMEOUT_MARGIN`]), so the caller gets the connector's error,
    /// which names the role, the generation and the SQLSTATE, rather than the pool's bare
    /// timeout. `None` takes the policy's `connect_deadline`.
    pub fn new(adapter: Adapter, pool_timeout: Option<Duration>) -> Self {
        let deadline = match pool_timeout {
            Some(limit) => limit.saturating_sub((limit / 10).min(POOL_TIMEOUT_MARGIN)),
            None => adapter.credentials().policy().connect_deadline(),
        };
        Self { adapter, deadline }
    }

    /// The adapter this connector belongs to.
    pub fn adapter(&self) -> &Adapter {
        &self.adapter
    }

    /// How long a connect keeps trying.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Opens a connection with the current credential through `driver`. See the type's
    /// documentation.
    pub async fn connect<D: Driver>(
        &self,
        driver: &D,
    ) -> Result<Connected<D::Connection>, Refused<D::Error>> {
        match self.run(driver, None).await {
            Ok(connected) => Ok(connected),
            Err(refused) => Err(refused.expect("the first attempt always opens")),
        }
    }

    /// For a pool that connects by itself (sqlx): its login with generation `refused` was just
    /// refused. Finds the login that works and proves it, as [`connect`](Self::connect) does
    /// (reporting the refusal, trying a newer, the store's pending or the last accepted
    /// credential), without logging in with `refused` again first; the provider publishes
    /// what the database accepts, and the proving session is closed before this returns.
    /// `Ok(())`: a login that works is proven (newer than `refused`, or the last accepted one
    /// the pool's options go back to); the caller retries its own checkout once the pool's
    /// options carry it.
    ///
    /// One proof at a time per adapter: the checkouts refused together (a pool under load meets
    /// a rotation with every waiter at once) wait for the first one's turn instead of each
    /// opening a session beside the pool, and when it proved a login, return at once. After a
    /// proof that failed, the next waiter tries in its turn, within what is left of its own
    /// deadline. `Err(None)`: nothing was opened before the deadline.
    pub async fn prove_after_refusal<D: Driver>(
        &self,
        driver: &D,
        refused: Generation,
    ) -> Result<(), Option<Refused<D::Error>>> {
        let until = Instant::now() + self.deadline;
        let proofs = self.adapter.refusal_proofs();
        let Ok(turn) = tokio::time::timeout_at(until, self.adapter.refusal_turn()).await else {
            return Err(None);
        };
        let current = self.adapter.credentials().current();
        if self.adapter.refusal_proofs() != proofs
            || (current.generation() > refused && current.is_proven())
        {
            // Proven while this checkout waited for its turn.
            return Ok(());
        }
        // What is left of the deadline after waiting for the turn.
        let rest = Self {
            adapter: self.adapter.clone(),
            deadline: until.saturating_duration_since(Instant::now()),
        };
        let Connected {
            connection, live, ..
        } = rest.run(driver, Some(refused)).await?;
        self.adapter.refusal_proved();
        // The waiters need not wait for the close: the session keeps its budget slot until
        // then (and the grace after it).
        drop(turn);
        driver.close(connection).await;
        drop(live);
        Ok(())
    }

    async fn run<D: Driver>(
        &self,
        driver: &D,
        already_refused: Option<Generation>,
    ) -> Result<Connected<D::Connection>, Option<Refused<D::Error>>> {
        let credentials = self.adapter.credentials();
        let feedback = self.adapter.feedback();
        let counters = self.adapter.counters();
        let started = Instant::now();
        let own_until = started + self.deadline;
        let mut until = own_until;
        let mut changes = credentials.subscribe();
        let mut backoff = RETRY_INITIAL;
        let mut attempts = 0u32;
        let mut refused_before = false;
        let mut fallback: Option<Arc<Snapshot>> = None;
        let mut fell_back_from: Option<Generation> = None;
        let mut tried_pending_for: Option<Generation> = None;
        // The store's next answer this connect may wait for in a burst of refusals that has
        // outlived its deadline (decided at the first refusal).
        let mut next_answer: Option<Option<Instant>> = None;
        // The session's place in the pool's budget, held for the connection's life. The pool
        // stays within its size by itself; a probe in flight may hold a slot for a moment.
        let slot = match self.adapter.slot(SLOT_WAIT_MAX.min(self.deadline)).await {
            Some(slot) => slot,
            None => {
                counters.bump(Event::OverBudget);
                tracing::warn!(
                    limit = self.adapter.session_limit(),
                    "no session left in the pool's budget after waiting; opening beyond it"
                );
                Slot::default()
            }
        };
        loop {
            changes.borrow_and_update();
            let is_fallback = fallback.is_some();
            let mut snapshot = fallback.take().unwrap_or_else(|| credentials.current());
            if snapshot.is_token_due(Instant::now()) {
                // A minted token within its expiry margin: never logged in with. The next one
                // is minted (single flight, shared with the refresher and other connects).
                snapshot = fresh_token(credentials, snapshot, until).await;
            }
            let generation = snapshot.generation();
            self.adapter.login_turn().await;
            let tag = self.adapter.tag(&snapshot);
            attempts += 1;
            if attempts > 1 {
                counters.bump(if refused_before {
                    Event::AuthRetry
                } else {
                    Event::ConnectRetry
                });
            }
            // The pool's own login with this generation was refused just before (sqlx).
            let skip = attempts == 1 && already_refused == Some(generation);
            let opened = if skip {
                None
            } else {
                Some(driver.open(snapshot.credential()).await)
            };
            let error = match opened {
                None => None,
                Some(Ok(connection)) => {
                    let is_pending = is_fallback && generation > credentials.generation();
                    feedback.report_accepted(generation);
                    let live = counters.opened(generation).holding(slot);
                    if is_pending {
                        counters.bump(Event::PendingConnect);
                    } else if is_fallback {
                        counters.bump(Event::FallbackConnect);
                    } else if credentials.generation() != generation {
                        counters.bump(Event::RacedConnect);
                    }
                    return Ok(Connected {
                        connection,
                        tag,
                        live,
                    });
                }
                Some(Err(error)) => Some(error),
            };
            let failure = error.as_ref().map_or(Failure::Auth, |e| driver.classify(e));
            let refused = |error: Option<D::Error>| {
                error.map(|error| Refused {
                    code: driver.code(&error),
                    error,
                    failure,
                    username: snapshot.credential().username().to_owned(),
                    generation,
                    attempts,
                    waited: started.elapsed(),
                })
            };
            if attempts == 1
                && let Some(error) = &error
            {
                tracing::debug!(
                    username = %snapshot.credential().username(),
                    generation = generation.get(),
                    code = driver.code(error).unwrap_or_default(),
                    failure = failure.as_str(),
                    error = %chain(error),
                    "opening a connection failed"
                );
            }
            match failure {
                Failure::Fatal => {
                    counters.bump(Event::ConnectFailure);
                    let refused = refused(error);
                    log_failure(refused.as_ref(), "connect failed with a fatal error");
                    return Err(refused);
                }
                Failure::Auth => {
                    counters.bump(Event::AuthFailure);
                    refused_before = true;
                    // A minted login whose token was replaced while this connect was under
                    // way (a database that takes only the newest token): the new token, at once,
                    // and no report (that would mint yet another and refuse the connects
                    // already using this one).
                    let now_current = credentials.current();
                    if !is_fallback
                        && Instant::now() < until
                        && snapshot.credential().is_minted()
                        && now_current.generation() == generation
                        && !now_current.is_same_secret(&snapshot)
                    {
                        tracing::debug!(
                            generation = generation.get(),
                            "login refused with a token replaced meanwhile; retrying with the new one"
                        );
                        continue;
                    }
                    // A burst of refusals waits for a working credential for one deadline in
                    // all, not one per connect: the connects that come later (queued behind the
                    // first ones) fail as fast as a plain pool's would, with the same error, so
                    // that a pool's checkout never takes its queue time plus a whole deadline.
                    // They still wait for the store's next answer when it is due soon, so a
                    // store that has been fixed is seen by the next checkout.
                    if let Some(since) = credentials.refused_since(generation) {
                        let burst_until = (since + self.deadline).max(started);
                        // One more answer per connect, not one after another.
                        let next_answer = next_answer.get_or_insert_with(|| {
                            credentials
                                .next_refusal_fetch()
                                .filter(|at| *at <= Instant::now() + AUTH_REFRESH_MAX)
                        });
                        until = own_until.min(
                            next_answer
                                .map_or(burst_until, |at| burst_until.max(at + NEXT_ANSWER_GRACE)),
                        );
                    } else if generation == credentials.generation() {
                        // The first refusal of the current generation: a burst of its own
                        // begins. (A refused pending or fallback login changes nothing here.)
                        until = own_until;
                        next_answer = None;
                    }
                    // The store may be mid-rotation with the database already on its pending
                    // credential (a single-user rotation between setSecret and finishSecret):
                    // try it; once it opens, the provider publishes it. A pending credential
                    // the provider holds already is tried at once, before asking the store: a
                    // store slowed by a whole fleet's refusals must not keep a connect from the
                    // login that works until its deadline, and a fleet that has the pending
                    // login needs no store call to use it. The refusal is recorded; the store
                    // is asked only if the pending login is refused too.
                    if let Some(pending) = untried_pending(&feedback, tried_pending_for, generation)
                    {
                        credentials.report_refused(generation);
                        tried_pending_for = Some(generation);
                        fallback = Some(pending);
                        continue;
                    }
                    // Shared with every other refused connect; rate-limited by the provider,
                    // and never waited for past the deadline (a slow or black-holed store).
                    let fresh = report_refusal(credentials, generation, until).await;
                    if fresh.is_some_and(|fresh| fresh.generation() != generation) {
                        tracing::debug!(
                            refused = generation.get(),
                            "login refused; retrying with the newer credential"
                        );
                        continue;
                    }
                    // The report's own pending fetch may have found one.
                    if let Some(pending) = untried_pending(&feedback, tried_pending_for, generation)
                    {
                        tried_pending_for = Some(generation);
                        fallback = Some(pending);
                        continue;
                    }
                    // A login the database never accepted (a mistyped secret): the last login
                    // it did accept may still work. Tried once per refused generation.
                    if !snapshot.is_proven()
                        && fell_back_from != Some(generation)
                        && let Some(proven) = feedback.proven()
                        && proven.generation() < generation
                    {
                        tracing::debug!(
                            refused = generation.get(),
                            fallback = proven.generation().get(),
                            "the new credential is refused and was never accepted; trying the last accepted one"
                        );
                        fell_back_from = Some(generation);
                        fallback = Some(proven);
                        continue;
                    }
                }
                Failure::Transient => {}
            }
            let now = Instant::now();
            if now >= until {
                counters.bump(Event::ConnectFailure);
                let refused = refused(error);
                log_failure(refused.as_ref(), "connect failed until its deadline");
                return Err(refused);
            }
            // Waiting for the store's next answer: ask it the moment it is due.
            let wait = match next_answer.flatten().filter(|at| *at > now) {
                Some(at) => (at - now).min(until - now),
                None => backoff.min(until - now),
            };
            backoff = (backoff * 2).min(RETRY_MAX);
            if failure == Failure::Auth {
                // A new credential ends the wait early.
                tokio::select! {
                    _ = changes.changed() => {}
                    () = tokio::time::sleep(wait) => {
                        // Ask the store again before retrying the refused login.
                        let _ = report_refusal(credentials, generation, until).await;
                    }
                }
            } else {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// An error and its sources, `a: b: c` (tokio-postgres displays a server error as "db error"
/// and keeps the server's message in its source).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Logs a connect that failed for good: the one log line of it.
fn log_failure<E: std::error::Error + 'static>(
    refused: Option<&Refused<E>>,
    message: &'static str,
) {
    let Some(refused) = refused else {
        return;
    };
    tracing::warn!(
        username = %refused.username(),
        generation = refused.generation().get(),
        code = refused.code().unwrap_or_default(),
        failure = refused.failure().as_str(),
        attempts = refused.attempts(),
        error = %chain(refused.error()),
        "{message}"
    );
}

/// The next token of a minted `due` login that is within its expiry margin: waits for the
/// provider's mint (single flight), but not past `until`. A mint that fails or is late leaves
/// `due` in use, with a warning: before its end the token still works (the margin is there
/// for clock skew and the connect's own time), and refusing to connect would fail a request
/// a plain pool with that token would serve; past its end the database refuses it, and the
/// refusal is followed like any other.
async fn fresh_token(
    credentials: &crate::RotatingCredentials,
    due: Arc<Snapshot>,
    until: Instant,
) -> Arc<Snapshot> {
    let minted = match tokio::time::timeout_at(until, credentials.refresh()).await {
        Ok(Ok(fresh)) => fresh,
        Ok(Err(_)) | Err(_) => credentials.current(),
    };
    if !minted.is_token_due(Instant::now()) {
        return minted;
    }
    tracing::warn!(
        username = %due.credential().username(),
        generation = due.generation().get(),
        "no new token could be minted; connecting with one within its expiry margin"
    );
    due
}

/// The store's pending credential to try after a refusal of `generation`, if the provider
/// holds one that this connect has not tried for that generation yet (and is not the refused
/// login itself).
fn untried_pending(
    feedback: &super::Feedback,
    tried_for: Option<Generation>,
    generation: Generation,
) -> Option<Arc<Snapshot>> {
    if tried_for == Some(generation) {
        return None;
    }
    let pending = feedback
        .pending()
        .filter(|p| p.generation() != generation)?;
    tracing::debug!(
        refused = generation.get(),
        pending = pending.generation().get(),
        "login refused; trying the store's pending credential"
    );
    Some(pending)
}

/// Reports a refused login of `generation` to the provider and waits for the snapshot to retry
/// with, but not past `until`: the report's store fetch (and its pending fetch) runs in a task
/// of its own, so a connect that gives up at its deadline does not cancel a fetch that other
/// connects share; they find its result when it ends. When the store has not answered by
/// then, or its fetch failed, a credential newer than the refused one that the provider holds
/// by now (published meanwhile) is still returned: a plain pool's next connect would use it.
async fn report_refusal(
    credentials: &crate::RotatingCredentials,
    generation: Generation,
    until: Instant,
) -> Option<Arc<Snapshot>> {
    let reporting = credentials.clone();
    let report = tokio::spawn(async move { reporting.report_auth_failure(generation).await });
    match tokio::time::timeout_at(until, report).await {
        Ok(Ok(Ok(snapshot))) => return Some(snapshot),
        Ok(Ok(Err(_)) | Err(_)) => {}
        Err(_) => {
            tracing::debug!(
                generation = generation.get(),
                "the store did not answer before the connect's deadline"
            );
        }
    }
    let current = credentials.current();
    (current.generation() > generation).then_some(current)
}

#[cfg(test)]
mod tests;
