//! How stale connections get closed: the `pre_recycle` hook refuses them at checkout, and a
//! watcher task closes idle ones with [`Pool::retain`](deadpool_postgres::Pool::retain).

use std::sync::Arc;

use credswap_core::contract::{Adapter, Event};
use deadpool_postgres::{ClientWrapper, HookError, WeakPool};
use tokio::sync::oneshot;

use crate::tag::Tags;

/// The `pre_recycle` hook: a stale connection is closed instead of handed out.
pub(crate) fn refuse_stale(
    tags: &Tags,
    adapter: &Adapter,
    client: &ClientWrapper,
) -> Result<(), HookError> {
    if tags.should_close(client, adapter, &adapter.credentials().load(), false) {
        adapter.counters().bump(Event::StaleClosed);
        return Err(HookError::message(
            "connection authenticated with a stale credential",
        ));
    }
    Ok(())
}

/// Closes idle stale connections: at once after a generation change, then on the
/// [`Adapter::next_sweep`] schedule while stale connections are out (each is closed soon after it
/// is returned), at a lease's retirement point, and often enough for the pool's session age. Ends when the pool is dropped (`alive`
/// resolves) or closed.
pub(crate) async fn watch(
    pool: WeakPool,
    tags: Arc<Tags>,
    adapter: Adapter,
    mut alive: oneshot::Receiver<()>,
) {
    let credentials = adapter.credentials().clone();
    let counters = Arc::clone(adapter.counters());
    let mut changes = credentials.subscribe();
    loop {
        let current = credentials.current();
        {
            let _drain =
                tracing::debug_span!("credswap.drain", generation = current.generation().get())
                    .entered();
            let Some(pool) = pool.upgrade() else { return };
            if pool.is_closed() {
                return;
            }
            // A canary taken for an idle connection is followed by a probe (one connection
            // outside the pool) only when the two fit in `max_size`.
            let quiet = adapter.probe_fits(pool.status().waiting > 0);
            let removed =
                pool.retain(|client, _| !tags.should_close(client, &adapter, &current, quiet));
            let closed = removed.removed.len() as u64;
            // Dropping the clients closes the connections.
            drop(removed);
            if closed > 0 {
                counters.add(Event::StaleClosed, closed);
                counters.add(Event::StaleClosedIdle, closed);
                tracing::debug!(
                    closed,
                    generation = current.generation().get(),
                    "closed idle stale connections"
                );
            }
            tags.prune();
        }
        let wait = adapter.next_sweep(&current, counters.live_stale(&current) > 0);
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
