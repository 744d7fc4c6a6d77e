use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::sqlx::postgres::PgPool;
use super::state::{Registration, Shared};

/// While stale connections may sit idle, sweep this often.
const SWEEP: Duration = Duration::from_millis(25);
/// How long to keep sweeping after a swap: catches connections whose return was under way
/// (their `after_release` ran before the swap, their ping after it) when the first sweep ran.
const SETTLE: Duration = Duration::from_millis(100);
/// Sweeps that cannot pop every idle connection (tasks are waiting for one; they get them
/// through `before_acquire`, which closes stale ones) are retried for at most this long.
const SETTLE_MAX: Duration = Duration::from_secs(5);
/// Otherwise wake at least this often, to notice ending leases.
const IDLE: Duration = Duration::from_secs(1);

/// Follows the provider: swaps the pool's connect options on every new generation and closes
/// idle connections created before the swap at once; busy ones are closed by `after_release`
/// when returned. Also retires connections whose lease is ending. Ends when the pool is closed
/// (or the runtime shuts down); until then it holds a pool handle, as sqlx has no weak one.
pub(crate) async fn run(pool: PgPool, shared: Arc<Shared>, registration: Registration) {
    // Dropped (unregistering the pool) before the pool handle below.
    let _registration = registration;
    let mut changes = shared.credentials.subscribe();
    let closed = pool.close_event();
    tokio::pin!(closed);
    let mut swept_generation = shared.options_generation();
    let mut swept_retirement = None;
    let mut settle: Option<(Instant, Instant)> = None;
    loop {
        if pool.is_closed() {
            return;
        }
        let current = shared.credentials.current();
        let now = Instant::now();
        shared.swap_to(&pool, &current);
        // Swaps are also made by the retrying checkout; sweep after any of them.
        if shared.options_generation() != swept_generation {
            swept_generation = shared.options_generation();
            settle = Some((now, now + SETTLE));
        }
        if let Some(at) = current.retire_at()
            && now >= at
            && swept_retirement != Some(at)
        {
            swept_retirement = Some(at);
            tracing::info!(
                generation = current.generation().get(),
                "the credential's lease is ending; retiring its connections"
            );
            settle = Some((now, now + SETTLE));
        }
        if let Some((started, until)) = settle {
            let complete = sweep(&pool);
            if now >= until && (complete || now >= started + SETTLE_MAX) {
                settle = None;
            }
        }
        let wait = if settle.is_some() {
            SWEEP
        } else {
            current
                .retire_at()
                .filter(|at| swept_retirement != Some(*at))
                .map(|at| at.saturating_duration_since(now))
                .map_or(IDLE, |left| left.min(IDLE))
        };
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(wait) => {}
            // A raced connection was admitted; sqlx may put it straight into the idle queue.
            () = shared.sweep_requested.notified() => {
                let now = Instant::now();
                settle = Some((now, now + SETTLE));
            }
            _ = &mut closed => return,
        }
    }
}

/// Pops every idle connection and hands it straight back: `after_release` closes the stale ones
/// and returns the others to the idle queue. Returns whether every idle connection was reached
/// (`try_acquire` yields nothing while tasks wait for a connection).
fn sweep(pool: &PgPool) -> bool {
    let idle = pool.num_idle();
    for _ in 0..idle {
        match pool.try_acquire() {
            // Dropping it runs sqlx's return path (in a spawned task): `after_release`, then a
            // ping and the idle queue for a connection that is still current.
            Some(conn) => drop(conn),
            None => return false,
        }
    }
    true
}
