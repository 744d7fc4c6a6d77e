//! The background refresher: when to fetch next, and the task that does it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{RotatingCredentials, Shared, lock};

/// Why the refresher fetches when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// The refresh interval came round.
    Interval,
    /// The credential's renewal point (a lease's retirement, a token's next mint).
    Renewal,
    /// Just after the store's announced rotation time.
    Rotation,
    /// A retry after this many failed fetches in a row.
    Retry(u32),
}

impl Due {
    /// Whether the fetch came at a time the whole fleet shares, so that the next interval is
    /// spread again: the store's announced rotation, or the end of an outage (a retry after
    /// [`OUTAGE_FAILURES`] failures or more: the fleet's backoffs all reach their cap, and the
    /// first retries after the store is back succeed within a cap of each other).
    fn shared_by_the_fleet(self) -> bool {
        match self {
            Due::Rotation => true,
            Due::Retry(failures) => failures >= OUTAGE_FAILURES,
            Due::Interval | Due::Renewal => false,
        }
    }
}

impl Shared {
    /// When the refresher fetches next, and why. `began` is when the interval began: the start
    /// of the refresher's last fetch (or of the first), or the end of another caller's refresh;
    /// `spread_interval` for an interval spread over its whole length (see [`spread_over`]).
    ///
    /// The schedule is anchored at the start of a fetch, not at its end, so that a slow answer
    /// does not move it: the calls of a fleet that a stalled store holds (a busy second, a
    /// leader election) come back all at once, and a schedule counted from the answers would
    /// put the whole fleet's next refreshes in that same second, then every one after.
    fn next_refresh(&self, began: Instant, spread_interval: bool) -> (Instant, Due) {
        let now = Instant::now();
        let failures = lock(&self.status).consecutive_failures;
        let policy = &self.policy;
        if failures > 0 {
            // Never slower than the normal schedule: that load is acceptable to the store, and a
            // fixed credential (after a bad publish) must still arrive within one interval.
            let backoff = policy.backoff(failures).min(policy.refresh_interval());
            return (
                now + jittered(backoff, policy.jitter()),
                Due::Retry(failures),
            );
        }
        let interval = if spread_interval {
            spread_over(policy.refresh_interval(), policy.jitter())
        } else {
            jittered(policy.refresh_interval(), policy.jitter())
        };
        // A fetch that took over half the interval: the store gets half an interval of rest
        // from this provider all the same.
        let mut next = ((began + interval).max(now + interval / 2), Due::Interval);
        if let Some(renew_at) = self.current.load().renew_at() {
            // Refresh by the renewal point (a lease's retirement, a token's next mint); if it
            // has passed and the store still hands out the same credential, retry at the
            // backoff pace instead of spinning.
            let by = if renew_at > now {
                renew_at
            } else {
                now + policy.backoff_initial()
            };
            if by < next.0 {
                next = (by, Due::Renewal);
            }
        }
        // The store says when it rotates next (Vault's static roles, Secrets Manager's
        // schedule): fetch just after, so the new password arrives before the pool needs it.
        if let Some(rotates_at) = self.current.load().credential().next_rotation_at()
            && let Ok(until) = rotates_at.duration_since(SystemTime::now())
        {
            let after = now + until + AFTER_ROTATION + spread(AFTER_ROTATION_SPREAD);
            if after < next.0 {
                next = (after, Due::Rotation);
            }
        }
        next
    }
}

/// Failed fetches in a row after which the fetch that succeeds is taken for the end of an
/// outage the whole fleet saw (see [`Due::shared_by_the_fleet`]).
const OUTAGE_FAILURES: u32 = 3;

/// How long after the store's announced rotation time the refresher fetches: the store's clock
/// and its own schedule are not exact (Vault reports the time left in whole seconds).
const AFTER_ROTATION: Duration = Duration::from_secs(1);

/// The wake-up after a store's announced rotation time is spread over this much more, per
/// provider, so a fleet of instances does not call the store in the same second.
const AFTER_ROTATION_SPREAD: Duration = Duration::from_secs(2);

/// A random duration in `[0, max)`.
fn spread(max: Duration) -> Duration {
    max.mul_f64(rand::random::<f64>())
}

/// An interval spread over its whole length: a random point of it (when jitter is on). The
/// first after the provider is built, and the first after a fetch the whole fleet made at
/// about the same time (see [`Due::shared_by_the_fleet`]).
///
/// Each other interval is only shortened by up to `jitter` of it, so the providers of a fleet
/// started at once (a deployment, a restart) would refresh in step for a long time: at a 10 %
/// jitter their phases drift apart by about 3 % of an interval per refresh, and only by the
/// square root of the refreshes after that (15 % after 25 refreshes). In step, the store gets
/// the whole fleet's calls in the same second (a burst its rate quota, or a single Vault node,
/// answers slowly or throttles) and a rotation reaches every instance at the same moment,
/// with all their logins. One interval spread over its length puts each provider on a phase
/// of its own, for at most one extra fetch.
fn spread_over(interval: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return interval;
    }
    // (0, 1]: never later than the interval, as for every refresh.
    interval.mul_f64(1.0 - rand::random::<f64>())
}

/// Shortens `base` by a random fraction in `[0, jitter)`; never lengthens it, so the refresh
/// interval stays below the overlap window.
fn jittered(base: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return base;
    }
    let cut = rand::random::<f64>() * jitter;
    base.mul_f64(1.0 - cut)
}

/// The refresher: `began` is when the provider's first fetch started.
pub(super) async fn run(shared: Weak<Shared>, wake: Arc<Notify>, began: Instant) {
    // Holds only a weak reference between fetches, so dropping the last handle ends the task
    // (`Shared::drop` also aborts it, so it never outlives the provider even mid-sleep).
    let mut began = began;
    // The first interval is spread, and stays so until the refresher fetches.
    let mut spread = true;
    // The refreshes completed when this task last looked (the build's fetch is not one): more
    // now means another caller's refresh, which moves the schedule; a wake-up with as many is
    // this task's own refresh's notification.
    let mut seen = 0;
    loop {
        let Some((at, due)) = shared.upgrade().map(|s| s.next_refresh(began, spread)) else {
            return;
        };
        tracing::trace!(
            ?due,
            in_ms = at.saturating_duration_since(Instant::now()).as_millis() as u64,
            "next scheduled refresh"
        );
        let woken = tokio::select! {
            () = tokio::time::sleep_until(at) => false,
            () = wake.notified() => true,
        };
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let completed = strong.completed.load(Ordering::Acquire);
        if completed != seen {
            // An on-demand refresh (a refused login, a caller's `refresh`) fetched (also when
            // the timer came due with it): the interval starts again from it, and its expiry or
            // recovery may have changed the schedule.
            seen = completed;
            began = Instant::now();
            tracing::trace!("another caller refreshed; the interval starts again");
            continue;
        }
        if woken {
            continue;
        }
        began = Instant::now();
        let provider = RotatingCredentials { shared: strong };
        let _ = provider.refresh().await;
        seen = provider.shared.completed.load(Ordering::Acquire);
        // After a fetch the fleet made at about the same time, spread the next interval again.
        spread = due.shared_by_the_fleet();
        provider.shared.health(true);
    }
}
