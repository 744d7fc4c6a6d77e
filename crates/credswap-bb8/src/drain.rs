//! How stale connections close: each connection's own task closes it.
//!
//! bb8 cannot remove idle connections from outside, and consults the manager only at checkout
//! and return. So the task that drives a tokio-postgres `Connection` (every manager spawns one)
//! also watches [`RotatingCredentials::subscribe`](credswap_core::RotatingCredentials::subscribe):
//! when the generation changes, or a lease's retirement point passes, while the connection is
//! idle, it drops the `Connection` and the socket closes. bb8 still counts the closed connection
//! until a checkout pops it, where `is_valid` refuses it without a round trip and bb8 opens a
//! replacement with the new credential.
//!
//! The task owns the connection's [`LiveConnection`] guard: the connection counts as live until
//! the task ends.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use credswap_core::contract::LiveConnection;
use credswap_core::contract::drain::{PENDING_POLL, next_sweep};
use tokio::time::{Instant, sleep_until};

use crate::tag::{EndGuard, Shared, Tag};

/// How long after its age limit an idle connection's task looks again (it may have been busy
/// at the limit, and is then retired at its return; idle, it is retired at once).
const AGE_CHECK: std::time::Duration = std::time::Duration::from_millis(1);

/// Spawns the task that drives `connection` until it ends (closed by the server, or after its
/// client was dropped) or is retired while idle.
pub(crate) fn spawn<F>(connection: F, tag: Arc<Tag>, live: LiveConnection, shared: Arc<Shared>)
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        // Dropped last (declared first): the session counts as closing until the grace after
        // the socket closed, even if the task is dropped unfinished.
        let _ended = EndGuard(Arc::clone(&tag));
        // `drive` owns the connection: when it returns, the socket is closed.
        drive(connection, &tag, &shared).await;
        drop(live);
    });
}

async fn drive<F>(connection: F, tag: &Tag, shared: &Shared)
where
    F: Future<Output = Result<(), tokio_postgres::Error>>,
{
    let mut changes = shared.credentials().subscribe();
    let mut connection = pin!(connection);
    loop {
        // Also at start: a connect that began before a rotation finishes stale.
        let retired = {
            let _drain =
                tracing::debug_span!("credswap.drain", connection = tag.generation().get())
                    .entered();
            tag.retire_if_idle(shared)
        };
        if retired {
            tracing::debug!(
                generation = tag.generation().get(),
                "closed an idle connection of an older credential"
            );
            return;
        }
        // With a lease, wake at its retirement point (and re-read it every second: a renewal
        // moves it without a generation change). While the store is rotating, wake for the
        // pending trials.
        let wake = {
            let current = shared.credentials().load();
            // While a login still needs a canary's proof (the current one unproven, or the
            // store's pending one), wake on the canary schedule: a canary is taken by a task
            // that looks, and a probe skipped or deferred is tried again.
            let wake = if shared.is_trying_pending() || !current.is_proven() {
                Some(Instant::now() + PENDING_POLL)
            } else {
                current
                    .retire_at()
                    .map(|_| Instant::now() + next_sweep(&current, false))
            };
            // At the pool's session age, the connection retires itself when idle (and, when
            // busy, at its return).
            // (Past it, the connection is busy: its return retires it.)
            let age = tag
                .age_limit()
                .filter(|at| *at > Instant::now())
                .map(|at| at + AGE_CHECK);
            match (wake, age) {
                (Some(wake), Some(age)) => Some(wake.min(age)),
                (wake, age) => wake.or(age),
            }
        };
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                return;
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    // The provider is gone: drive the connection to its end without watching.
                    if let Err(e) = connection.as_mut().await {
                        tracing::debug!(error = %e, "connection closed with an error");
                    }
                    return;
                }
            }
            () = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
        }
    }
}
