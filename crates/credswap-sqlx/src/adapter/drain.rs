//! How stale connections get closed: the `before_acquire` and `after_release` hooks close a
//! stale connection instead of handing it out or keeping it, and a watcher task swaps the
//! pool's connect options on every new generation and sweeps the idle connections through
//! `after_release` (sqlx has no way to close an idle connection in place).

use std::future::ready;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use credswap_core::contract::{Counters, drain};
use tokio::time::Instant;

use super::builder::{BoxFuture, CheckHook, Shared};
use super::sqlx;
use super::sqlx::pool::PoolConnectionMetadata;
use super::sqlx::postgres::{PgConnection, PgPool};
use super::tag::Verdict;

/// How long the watcher keeps sweeping after a swap or a lease's retirement point: a connection
/// whose return was under way (its `after_release` ran before the swap, its ping after)
/// reaches the idle queue after the first sweep.
const SETTLE: Duration = Duration::from_millis(100);

/// Sweeps that cannot reach every idle connection (tasks are waiting for one, and get them
/// through `before_acquire`) are retried for at most this long.
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// `before_acquire` and `after_release` (`returned`): a stale connection is closed, a current
/// one goes to the application's hook, if any.
pub(crate) fn check<'c>(
    shared: &Arc<Shared>,
    user: Option<&CheckHook>,
    returned: bool,
    conn: &'c mut PgConnection,
    meta: PoolConnectionMetadata,
) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
    let counters = shared.rotation.counters();
    // A return the watcher's sweep caused (approximately: the sweep's returns and the
    // application's are not told apart, only counted).
    let swept = returned && shared.take_swept();
    let current = shared.rotation.credentials().load();
    match shared.tags.judge(meta.age, &current) {
        Verdict::Current => {}
        Verdict::Expired => return Box::pin(ready(Ok(false))),
        verdict => {
            if verdict == Verdict::Untagged {
                Counters::bump(&counters.untagged);
            }
            Counters::bump(&counters.stale_closed);
            if swept {
                Counters::bump(&counters.stale_closed_idle);
            }
            if current.is_same_login(shared.login.generation()) {
                return Box::pin(ready(Ok(false)));
            }
            // The watcher has not swapped the options yet: the connect that replaces this
            // one would use the options being replaced. Close it once they are swapped.
            let (shared, generation) = (Arc::clone(shared), current.generation());
            return Box::pin(async move {
                shared.login.swapped(generation, drain::IDLE).await;
                Ok(false)
            });
        }
    }
    match user {
        Some(user) => {
            let shared = Arc::clone(shared);
            let age = meta.age;
            let decided = user(conn, meta);
            Box::pin(async move {
                let keep = decided.await;
                if !matches!(keep, Ok(true)) {
                    shared.tags.closed(age);
                }
                keep
            })
        }
        None => Box::pin(ready(Ok(true))),
    }
}

/// Follows the provider: swaps the pool's connect options on every new generation and sweeps
/// idle connections at once, and again at a lease's retirement point. Ends when the pool is
/// closed.
pub(crate) async fn watch(pool: PgPool, shared: Arc<Shared>) {
    let credentials = shared.rotation.credentials().clone();
    let mut changes = credentials.subscribe();
    let closed = pool.close_event();
    tokio::pin!(closed);
    let mut retired = None;
    let mut settle: Option<(Instant, Instant)> = None;
    loop {
        if pool.is_closed() {
            break;
        }
        let current = credentials.current();
        let now = Instant::now();
        if shared.login.swap(&pool, &current) {
            settle = Some((now, now + SETTLE));
        }
        if let Some(at) = current.retire_at()
            && now >= at
            && retired != Some(at)
        {
            retired = Some(at);
            tracing::info!(
                generation = current.generation().get(),
                "the credential's lease is ending; retiring its connections"
            );
            settle = Some((now, now + SETTLE));
        }
        if let Some((started, until)) = settle {
            let complete = sweep(&pool, &shared);
            if now >= until && (complete || now >= started + SETTLE_MAX) {
                settle = None;
            }
        }
        shared.tags.reconcile(pool.size() as usize);
        let wait = drain::next_sweep(&current, settle.is_some());
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            () = tokio::time::sleep(wait) => {}
            _ = &mut closed => break,
        }
    }
    shared.tags.reconcile(0);
}

/// Pops every idle connection and hands it straight back: `after_release` closes the stale ones
/// and returns the others to the idle queue. Returns whether every idle connection was reached
/// (`try_acquire` yields nothing while tasks wait for a connection).
fn sweep(pool: &PgPool, shared: &Shared) -> bool {
    for _ in 0..pool.num_idle() {
        let Some(conn) = pool.try_acquire() else {
            return false;
        };
        shared.swept.fetch_add(1, Ordering::SeqCst);
        // Dropping it runs sqlx's return path in a task: `after_release`, then a ping and the
        // idle queue for a connection that is still current.
        drop(conn);
    }
    true
}
