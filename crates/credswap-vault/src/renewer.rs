//! The token renewer: renews the Vault token at half its TTL on its own schedule, not only
//! inside a fetch.
//!
//! Why: the provider fetches on its own schedule (a `refresh_interval` of a minute, a lease's
//! renewal point, a refused login), and a token with a shorter TTL than that gap (a 10 s AppRole
//! token, a short child token) would expire between two fetches: the next fetch, or the
//! revocation of the leases at shutdown, would then be denied. So the first fetch spawns this
//! task on its Tokio runtime. It sleeps until the token's renewal point, which the source
//! publishes on a `watch` channel whenever the token changes (half its TTL before its end, as
//! a fetch would renew it), then takes the source's lock and does what a fetch does with the
//! token: `renew-self`, or for AppRole a new login once renewals are capped by the max TTL.
//! A renewal that fails (Vault unavailable) is tried again after 1 s, doubling to 30 s, while
//! the token lasts; a plain token that can no longer be renewed is left to its end (it cannot
//! be replaced), and nothing is scheduled for a token without a TTL (a root token).
//!
//! It holds only a `Weak` to the source's state and the `watch` receiver: the source's drop
//! drops the sender, which ends the task at once (or right after a renewal in progress). Outside
//! a Tokio runtime (a source fetched by another executor) there is no renewer and the token is
//! renewed inside fetches, as before.

use std::sync::Weak;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::source::Inner;

/// The first wait after a failed renewal; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);

/// The longest wait between two failed renewals.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The task: until the source is dropped, renew the token whenever it is due.
pub(crate) async fn run(source: Weak<Inner>, mut due: watch::Receiver<Option<SystemTime>>) {
    let mut retry = RETRY_MIN;
    loop {
        let next = *due.borrow_and_update();
        let Some(at) = next else {
            // Nothing to renew (yet): wait for the next token, or the end of the source.
            if due.changed().await.is_err() {
                return;
            }
            continue;
        };
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        match tokio::time::timeout(wait, due.changed()).await {
            Ok(Ok(())) => continue, // a fetch renewed it or logged in again: a new schedule
            Ok(Err(_)) => return,   // the source is gone
            Err(_) => {}            // due
        }
        let Some(inner) = source.upgrade() else {
            return;
        };
        let moved_on = inner.renew_token().await;
        drop(inner);
        if moved_on {
            retry = RETRY_MIN;
            continue;
        }
        // Failed (and already logged): try again later while the token lasts. Marking the
        // current schedule seen keeps the past due time from waking the loop at once.
        due.borrow_and_update();
        if let Ok(Err(_)) = tokio::time::timeout(retry, due.changed()).await {
            return; // the source is gone
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}
