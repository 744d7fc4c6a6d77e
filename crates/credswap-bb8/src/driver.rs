//! The task that drives a connection, and closes it itself when it is idle and stale.
//!
//! # Why connections close themselves
//!
//! bb8 0.9 has no drain API: from outside, a `Pool` offers `get`, `get_owned`, `add`,
//! `dedicated_connection`, `state` and `config`, nothing that removes idle connections. Its
//! reaper closes idle connections only by `idle_timeout` and `max_lifetime`, every `reaper_rate`
//! (30 s); the manager is asked about a connection only at checkout (`is_valid`, when
//! `test_on_check_out` is on) and at return (`has_broken`). What was considered:
//!
//! - **A watcher task that checks idle connections out** (`pool.get()` with a short timeout, so
//!   `is_valid` refuses the stale ones and bb8 drops them). It needs a `Pool` handle in a
//!   background task, and bb8 has no weak handle: the pool, its connections and the watcher
//!   would never be dropped. It also competes with the application: once the stale connections
//!   are gone and the idle queue is empty, its `get` waits like any caller and makes bb8 open a
//!   connection for it; with `QueueStrategy::Lifo` it keeps drawing (and pinging) the same fresh
//!   connection at the front and never reaches stale ones behind it. And its gets pollute
//!   `State::statistics`.
//! - **Short `idle_timeout`, `max_lifetime` and `reaper_rate`**: blind to generations. It closes
//!   healthy connections all day and still leaves stale ones open for up to a period.
//! - **Chosen: each connection closes itself.** Every manager must spawn a task that drives the
//!   tokio-postgres `Connection` (`bb8-postgres` does the same). Here that task also holds a
//!   receiver of the provider's generation changes (a `tokio::sync::watch`) and, when the
//!   credential changes or a lease's retirement point passes while the connection is idle, it
//!   drops the `Connection`: the socket closes at once and the server ends the backend (an idle
//!   session that ends by EOF is logged by the server only at `DEBUG1`). No extra task, no pool
//!   handle, nothing competing with traffic, any queue strategy.
//!
//! Measured (`tests/rotation.rs`, eight idle connections, five rotations, debug build, a busy
//! 2-core VM): every socket of the old generation closed 0.6 to 18 ms after the change, and the
//! backends were gone from `pg_stat_activity` 11 to 34 ms after it. Instrumenting the tasks
//! showed where the time goes: up to ~8 ms until the first task runs (waking a parked runtime
//! thread on the VM), then about 50 µs per connection.
//!
//! What remains in bb8's idle queue is a `Client` whose connection is gone. The next checkout
//! pops it, `is_valid` refuses it without a round trip, and `has_broken` reports it, so bb8's
//! own count (`Pool::state`) catches up at the next `get`, which then opens a replacement with
//! the new credential. Physical connections are therefore never more than bb8 counts, and bb8
//! never counts more than `max_size`.
//!
//! # Knowing that a connection is idle
//!
//! The manager sees a checkout (`is_valid` marks the connection busy) and a return
//! (`has_broken` marks it idle); a new connection starts idle, in the idle queue. That is
//! exact only if bb8 validates every checkout, which it does unless the application turned
//! `test_on_check_out` off. So the tasks close nothing until the first `is_valid` call has shown
//! that checkouts are validated. With `test_on_check_out(false)` they never close anything (a
//! busy connection must never be closed under its user) and `has_broken` logs a warning once.
//!
//! A connection from `Pool::dedicated_connection` is opened by the same `connect` and looks
//! idle forever: it is closed at the next rotation unless its owner calls
//! [`RotatingConnection::keep_open_on_rotation`](crate::RotatingConnection::keep_open_on_rotation).
//!
//! # Races
//!
//! Every decision to retire a connection and every phase change happens under the connection's
//! phase lock (see `Tag`):
//!
//! - A checkout racing the task: either the task retires the connection first, and `is_valid`
//!   refuses it, or `is_valid` marks it busy first, and the task leaves it alone (it is then
//!   checked against the current generation by `is_valid`, and again by `has_broken` when
//!   returned).
//! - A return racing a generation change: if `has_broken` runs first and sees the old
//!   generation, it marks the connection idle; the task, woken by the change after the new
//!   generation was published, takes the lock afterwards, sees it idle and stale, and closes
//!   it. If the task runs first, it sees the connection busy, and `has_broken`, taking the lock
//!   after the task (which came after the publication), sees the new generation and refuses it.
//! - A connect that began under the old credential and finished after the change: it is
//!   tagged with the generation read before connecting, and the task checks once at start,
//!   before waiting for changes.
//!
//! # Leases
//!
//! For a credential with an end (`expires_at`), connections must be gone by
//! `expires_at - expiry_margin` (the snapshot's `retire_at`). The task sleeps until that point,
//! and re-reads the snapshot at least every second while it has one, because a lease renewal
//! moves `retire_at` without changing the generation (and so without a change notification).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::connection::Tag;
use crate::state::State;

/// While the credential has a lease end, re-read the snapshot this often.
const LEASE_POLL: Duration = Duration::from_secs(1);

/// Drives `connection` until it ends (closed by the server, or after its client was dropped),
/// or is retired while idle; then counts it gone.
pub(crate) async fn drive<F>(connection: F, tag: Arc<Tag>, state: Arc<State>)
where
    F: Future<Output = Result<(), tokio_postgres::Error>>,
{
    // `watch` owns the connection: when it returns, the socket is closed.
    watch(connection, &tag, &state).await;
    state.record_gone(tag.generation);
}

async fn watch<F>(connection: F, tag: &Tag, state: &State)
where
    F: Future<Output = Result<(), tokio_postgres::Error>>,
{
    let mut changes = state.credentials.subscribe();
    let mut connection = pin!(connection);
    loop {
        let current = state.credentials.current();
        if tag.retire_if_idle(&current, state) {
            tracing::debug!(
                generation = tag.generation.get(),
                current = current.generation().get(),
                "closed an idle connection of an older credential"
            );
            break;
        }
        let wake = current.retire_at().map(|at| {
            let now = Instant::now();
            if at > now && tag.opened_at < at {
                at.min(now + LEASE_POLL)
            } else {
                now + LEASE_POLL
            }
        });
        drop(current);
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                break;
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    // The provider is gone (it cannot be while the manager holds it): drive the
                    // connection to its end without watching.
                    if let Err(e) = connection.as_mut().await {
                        tracing::debug!(error = %e, "connection closed with an error");
                    }
                    break;
                }
            }
            () = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
        }
    }
}
