//! The background refresher: when to fetch next, and the task that does it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{RotatingCredentials, Shared, lock};

impl Shared {
    /// When the refresher fetches next. `began` is when the interval began: the start of the
    /// refresher's last fetch (or of the first), or the end of another caller's refresh;
    /// `first` for the sleep after the provider's first fetch.
    ///
    /// The schedule is anchored at the start of a fetch, not at its end, so that a slow answer
    /// does not move it: the calls of a fleet that a stalled store holds (a busy second, a
    /// leader election) come back all at once, and a schedule counted from the answers would
    /// put the whole fleet's next refreshes in that same second, then every one after.
    fn next_refresh(&self, began: Instant, first: bool) -> Instant {
        let now = Instant::now();
        let failures = lock(&self.status).consecutive_failures;
        let policy = &self.policy;
        if failures > 0 {
            // Never slower than the normal schedule: that load is acceptable to the store, and a
            // fixed credential (after a bad publish) must still arrive within one interval.
            let backoff = policy.backoff(failures).min(policy.refresh_interval());
            return now + jittered(backoff, policy.jitter());
        }
        let interval = if first {
            spread_over(policy.refresh_interval(), policy.jitter())
        } else {
            jittered(policy.refresh_interval(), policy.jitter())
        };
        // A fetch that took over half the interval: the store gets half an interval of rest
        // from this provider all the same.
        let mut at = (began + interval).max(now + interval / 2);
        if let Some(renew_at) = self.current.load().renew_at() {
            // Refresh by the renewal point (a lease's retirement, a token's next mint); if it
            // has passed and the store still hands out the same credential, retry at the
            // backoff pace instead of spinning.
            let by = if renew_at > now {
                renew_at
            } else {
                now + policy.backoff_initial()
            };
            at = at.min(by);
        }
        // The store says when it rotates next (Vault's static roles, Secrets Manager's
        // schedule): fetch just after, so the new password arrives before the pool needs it.
        if let Some(rotates_at) = self.current.load().credential().next_rotation_at()
            && let Ok(until) = rotates_at.duration_since(SystemTime::now())
        {
            at = at.min(now + until + AFTER_ROTATION + spread(AFTER_ROTATION_SPREAD));
        }
        at
    }
}

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

/// The first sleep: a random point of the whole interval (when jitter is on).
///
/// Each later sleep is only shortened by up to `jitter` of the interval, so the providers of a
/// fleet started at once (a deployment, a restart) would refresh in step for a long time: at a
/// 10 % jitter their phases drift apart by about 3 % of an interval per refresh, and only by
/// the square root of the refreshes after that (15 % after 25 refreshes). In step, the store gets the whole fleet's calls in the same second
/// (a burst its rate quota, or a single Vault node, answers slowly or throttles) and a rotation
/// reaches every instance at the same moment, with all their logins. One sleep spread over the
/// interval puts each provider on a phase of its own, for at most one extra fetch.
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
    let mut first = true;
    // The refreshes completed when this task last looked: a wake-up with more is another
    // caller's refresh (which moves the schedule); with the same, this task's own.
    let mut seen = match shared.upgrade() {
        Some(s) => s.completed.load(Ordering::Acquire),
        None => return,
    };
    loop {
        let Some(at) = shared.upgrade().map(|s| s.next_refresh(began, first)) else {
            return;
        };
        first = false;
        let woken = tokio::select! {
            () = tokio::time::sleep_until(at) => false,
            () = wake.notified() => true,
        };
        if woken {
            let Some(strong) = shared.upgrade() else {
                return;
            };
            let completed = strong.completed.load(Ordering::Acquire);
            if completed != seen {
                // An on-demand refresh (a refused login, a caller's `refresh`) just fetched:
                // the interval starts again from it, and its expiry or recovery may have
                // changed the schedule.
                seen = completed;
                began = Instant::now();
            }
            continue;
        }
        let Some(strong) = shared.upgrade() else {
            return;
        };
        began = Instant::now();
        let provider = RotatingCredentials { shared: strong };
        let _ = provider.refresh().await;
        seen = provider.shared.completed.load(Ordering::Acquire);
        provider.shared.health(true);
    }
}
