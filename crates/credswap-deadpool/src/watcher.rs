use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use deadpool_postgres::WeakPool;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::state::State;

/// While busy stale connections are out, sweep this often so each closes soon after return.
const SWEEP: Duration = Duration::from_millis(25);
/// Otherwise wake at least this often, to notice a closed pool and ending leases.
const IDLE: Duration = Duration::from_secs(1);

/// Closes stale connections: idle ones at once after a generation change, busy ones as soon as
/// they are returned, and connections whose lease is ending. Ends when the pool is dropped
/// (`alive` resolves) or closed.
pub(crate) async fn run(pool: WeakPool, state: Arc<State>, mut alive: oneshot::Receiver<()>) {
    let mut changes = state.credentials.subscribe();
    loop {
        let current = state.credentials.current();
        {
            let Some(pool) = pool.upgrade() else { return };
            if pool.is_closed() {
                return;
            }
            let removed =
                pool.retain(|client, metrics| !state.is_stale(client, &metrics, &current));
            let closed = removed.removed.len();
            // Dropping the wrappers closes the connections.
            drop(removed);
            if closed > 0 {
                state
                    .stale_closed
                    .fetch_add(closed as u64, Ordering::Relaxed);
                tracing::debug!(
                    closed,
                    generation = current.generation().get(),
                    "closed idle connections of an older credential"
                );
            }
        }
        let wait = if state.live_stale(&current) > 0 {
            SWEEP
        } else {
            current
                .retire_at()
                .map(|at| at.saturating_duration_since(Instant::now()))
                .filter(|left| !left.is_zero())
                .map_or(IDLE, |left| left.min(IDLE))
        };
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(wait) => {}
            _ = &mut alive => return,
        }
    }
}
