//! The pool's limits beside `max_size`: a maximum session age, and connect pacing.
//!
//! Every adapter's builder has `max_session_age` and `max_connects_per_second`, which fill a
//! [`SessionLimits`] given to [`Adapter::apply_limits`](super::Adapter::apply_limits).
//!
//! **Session age.** Some databases end a session at a fixed age (Aurora DSQL after an hour);
//! a proxy or a failover rebalances only sessions that reconnect. With a `max_session_age`,
//! every connection's [`ConnectionTag`](super::ConnectionTag) carries an age limit, and the staleness rule retires
//! it there like a stale one: idle at once, busy when returned, its replacement opened inside
//! the pool's `max_size`. The limit is shortened per connection by a random fraction of up to
//! [`SESSION_AGE_JITTER`], so that connections opened together (at start-up, after a
//! rotation) do not all reconnect in the same second, and never lengthened, so a hard limit
//! is never hit by a live query.
//!
//! **Connect pacing.** RDS IAM authentication throttles at 200 new connections a second per
//! instance, DSQL has its own quota, and a fleet that rotates at once sends every pool's
//! reconnects in the same second. With `max_connects_per_second`, every login the adapter
//! makes (connects, their retries and probes) waits for its turn: logins are spaced evenly,
//! `1 / per_second` apart (widened by [`PACING_MARGIN`]: the server sees a login a connect's
//! latency later, and that latency varies), so a rotation's reconnects are spread instead of
//! burst. The pool's own timeouts still apply: a pace too slow for the pool's demand shows as
//! checkout timeouts, so size it for the reconnects of a whole pool. A pool that
//! connects by itself (sqlx, which has no connect hook) cannot have its logins timed: there the
//! adapter lets a retired connection go only at a turn, and each login the pool made takes a
//! turn too ([`Adapter::login_taken`](super::Adapter::login_taken)), so that logins deferred
//! by the pool and then made together still stay under the cap.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::AdapterError;

/// A pool's session age and connect pace, as its builder was given them (see the module docs).
///
/// ```
/// use std::time::Duration;
/// use credswap_core::contract::limits::SessionLimits;
///
/// // Aurora DSQL ends a session after an hour; its connection rate has a quota.
/// let limits = SessionLimits::default()
///     .max_session_age(Duration::from_secs(55 * 60))
///     .max_connects_per_second(50);
/// assert!(limits.check().is_ok());
/// assert!(SessionLimits::default().max_connects_per_second(0).check().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionLimits {
    max_session_age: Option<Duration>,
    max_connects_per_second: Option<u32>,
}

impl SessionLimits {
    /// Retires every connection at this age (less a jitter of up to [`SESSION_AGE_JITTER`]),
    /// like a stale one.
    #[must_use]
    pub fn max_session_age(mut self, max_age: Duration) -> Self {
        self.max_session_age = Some(max_age);
        self
    }

    /// Paces the adapter's logins to at most this many a second.
    #[must_use]
    pub fn max_connects_per_second(mut self, per_second: u32) -> Self {
        self.max_connects_per_second = Some(per_second);
        self
    }

    /// The session age given, if any.
    pub fn session_age(&self) -> Option<Duration> {
        self.max_session_age
    }

    /// The connect pace given, in logins per second, if any.
    pub fn connects_per_second(&self) -> Option<u32> {
        self.max_connects_per_second
    }

    /// Refuses limits that would stop the pool: a zero session age, zero logins a second.
    ///
    /// # Errors
    ///
    /// [`AdapterError::is_config`], naming the setting.
    pub fn check(&self) -> Result<(), AdapterError> {
        if self.max_session_age.is_some_and(|age| age.is_zero()) {
            return Err(AdapterError::config(
                "max_session_age must be longer than zero: leave it unset for no limit",
                None,
            ));
        }
        if self.max_connects_per_second == Some(0) {
            return Err(AdapterError::config(
                "max_connects_per_second must be at least 1: leave it unset for no pacing",
                None,
            ));
        }
        Ok(())
    }
}

/// A session's age limit is shortened by a random fraction of up to this much of it.
pub const SESSION_AGE_JITTER: f64 = 0.1;

/// Paced logins are spaced this fraction wider than `1 / per_second`, so that the server,
/// which sees each login a connect's latency after it starts, never counts more than
/// `per_second` in any second.
pub const PACING_MARGIN: f64 = 0.05;

/// The limits an adapter applies beside `max_size` (see the module docs). Set once, at build.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    max_session_age: OnceLock<Duration>,
    pacing: OnceLock<Pacer>,
}

impl Limits {
    /// Applies `limits` (checked by the caller); set once, later calls change nothing.
    pub(crate) fn apply(&self, limits: SessionLimits) {
        if let Some(age) = limits.max_session_age {
            let _ = self.max_session_age.set(age);
        }
        if let Some(per_second) = limits.max_connects_per_second {
            self.pace(per_second);
        }
    }

    pub(crate) fn max_session_age(&self) -> Option<Duration> {
        self.max_session_age.get().copied()
    }

    /// The age limit of a connection opened at `opened_at`: shortened by the jitter.
    pub(crate) fn age_limit_from(&self, opened_at: Instant) -> Option<Instant> {
        self.max_session_age()
            .map(|max| opened_at + max.mul_f64(1.0 - SESSION_AGE_JITTER * rand::random::<f64>()))
    }

    pub(crate) fn pace(&self, per_second: u32) {
        if per_second > 0 {
            let _ = self.pacing.set(Pacer::new(per_second));
        }
    }

    pub(crate) fn pacing(&self) -> Option<u32> {
        self.pacing.get().map(|p| p.per_second)
    }

    /// A login made without waiting for a turn (a pool that connects by itself): it takes the
    /// next turn, so the turns after it come later.
    pub(crate) fn take_turn(&self) {
        if let Some(pacer) = self.pacing.get() {
            pacer.reserve(Instant::now());
        }
    }

    /// Waits for the next login's turn; returns how long it waited. No pacing: at once.
    pub(crate) async fn login_turn(&self) -> Duration {
        match self.pacing.get() {
            Some(pacer) => pacer.turn().await,
            None => Duration::ZERO,
        }
    }
}

/// Spaces logins evenly: each takes the next free turn, `spacing` after the one before.
#[derive(Debug)]
struct Pacer {
    per_second: u32,
    spacing: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    fn new(per_second: u32) -> Self {
        Self {
            per_second,
            spacing: Duration::from_secs(1).mul_f64((1.0 + PACING_MARGIN) / f64::from(per_second)),
            next: Mutex::new(None),
        }
    }

    /// Reserves the next free turn at or after `now`.
    fn reserve(&self, now: Instant) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let at = next.map_or(now, |n| n.max(now));
        *next = Some(at + self.spacing);
        at
    }

    async fn turn(&self) -> Duration {
        let now = Instant::now();
        let at = self.reserve(now);
        if at > now {
            tokio::time::sleep_until(at).await;
        }
        at - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paced_logins_are_spaced_evenly() {
        let limits = Limits::default();
        limits.pace(20);
        let start = Instant::now();
        let mut turns = Vec::new();
        for _ in 0..41 {
            limits.login_turn().await;
            turns.push(Instant::now() - start);
        }
        // 41 logins at 20/s (5% margin): the 41st at 2.1 s, never 21 in one second.
        for window in turns.windows(21) {
            assert!(
                window[20] - window[0] >= Duration::from_secs(1),
                "{window:?}"
            );
        }
        assert_eq!(turns[0], Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_logins_each_get_their_own_turn() {
        let limits = std::sync::Arc::new(Limits::default());
        limits.pace(10);
        let start = Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let limits = std::sync::Arc::clone(&limits);
                tokio::spawn(async move {
                    limits.login_turn().await;
                    Instant::now() - start
                })
            })
            .collect();
        let mut at = Vec::new();
        for task in tasks {
            at.push(task.await.unwrap());
        }
        at.sort();
        assert!(at[9] >= Duration::from_millis(900), "{at:?}");
        for pair in at.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(100), "{at:?}");
        }
    }

    #[test]
    fn an_age_limit_is_shortened_by_the_jitter_never_lengthened() {
        let limits = Limits::default();
        limits.apply(SessionLimits::default().max_session_age(Duration::from_secs(100)));
        let opened = Instant::now();
        for _ in 0..200 {
            let at = limits.age_limit_from(opened).unwrap() - opened;
            assert!(
                at <= Duration::from_secs(100) && at >= Duration::from_secs(90),
                "{at:?}"
            );
        }
        assert_eq!(Limits::default().age_limit_from(opened), None);
    }
}
