//! How stale connections get closed: the `before_acquire` and `after_release` hooks close a
//! stale connection instead of handing it out or keeping it, and a watcher task swaps the
//! pool's connect options on every new generation (and back, while a new login is refused),
//! sweeps the idle connections through `after_release` (sqlx has no way to close an idle
//! connection in place), and asks for canaries while the current login is unproven (prove
//! before drain: a returned connection gives its slot to a probe of the new login).

use std::future::ready;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use credswap_core::Snapshot;
use credswap_core::contract::{Event, drain};
use tokio::time::Instant;

use super::builder::{BoxFuture, CheckHook, Shared};
use super::connect;
use super::sqlx;
use super::sqlx::pool::PoolConnectionMetadata;
use super::sqlx::{Connection, Executor};
use super::sqlx::postgres::{PgConnection, PgPool};
use super::tag::Verdict;

/// How long the watcher keeps sweeping after a swap or a lease's retirement point: a connection
/// whose return was under way (its `after_release` ran before the swap, its ping after)
/// reaches the idle queue after the first sweep.
const SETTLE: Duration = Duration::from_millis(100);

/// Sweeps that cannot reach every idle connection (tasks are waiting for one, and get them
/// through `before_acquire`) are retried for at most this long.
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// The longest a stale close waits for the server to end its session (a server that does not
/// answer: the close goes on, and sqlx drops the socket).
const SESSION_END_MAX: Duration = Duration::from_secs(1);

/// While the current login is unproven, how often the watcher looks whether a canary is due.
const CANARY_POLL: Duration = Duration::from_millis(100);

/// How long a canary asked of the pool may take to come (a connection returned) before the
/// watcher probes beside the pool instead.
const CANARY_WAIT_MAX: Duration = Duration::from_millis(500);

/// `before_acquire` and `after_release` (`returned`): a stale connection is closed, a current
/// one goes to the application's hook, if any.
pub(crate) fn check<'c>(
    shared: &Arc<Shared>,
    user: Option<&CheckHook>,
    returned: bool,
    conn: &'c mut PgConnection,
    meta: PoolConnectionMetadata,
) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
    let counters = shared.adapter.counters();
    // A return the watcher's sweep caused (approximately: the sweep's returns and the
    // application's are not told apart, only counted).
    let swept = returned && shared.take_swept();
    let current = shared.adapter.credentials().load();
    match shared.tags.judge(meta.age, &current) {
        Verdict::Current if returned => {
            if let Some(login) = shared.take_canary()
                && shared.adapter.is_canary_login(&login)
            {
                return Box::pin(prove_in_slot(Arc::clone(shared), conn, meta, login, swept));
            }
        }
        Verdict::Current => {}
        Verdict::Expired => {
            let shared = Arc::clone(shared);
            return Box::pin(async move {
                end_session(&shared, conn).await;
                Ok(false)
            });
        }
        verdict => {
            if verdict == Verdict::Untagged {
                counters.bump(Event::Untagged);
            }
            if verdict == Verdict::Aged {
                counters.bump(Event::AgedOut);
            }
            counters.bump(Event::StaleClosed);
            if swept {
                counters.bump(Event::StaleClosedIdle);
            }
            drop(current);
            let wanted = connect::wanted(shared.adapter.credentials());
            let swapped = wanted.is_same_login(shared.login.generation());
            // The watcher may not have swapped the options yet: the connect that replaces
            // this one would use the options being replaced. Close it once they are swapped.
            // Under connect pacing, the slot is let go at its replacement's login turn.
            let shared = Arc::clone(shared);
            return Box::pin(async move {
                if !swapped {
                    shared.login.swapped(&wanted, drain::IDLE).await;
                }
                end_session(&shared, conn).await;
                if shared.adapter.connect_pacing().is_some() {
                    shared.adapter.login_turn().await;
                }
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

/// A canary: a returned connection of the last proven login gives its slot to a probe of the
/// new login. sqlx releases a slot only after the connection in it is closed, and a waiting
/// task takes it at once, so the probe runs here, inside the slot, after the connection's
/// server session has ended (it terminates itself): the pool and the probe together never hold
/// more sessions than the pool's size. Once the new login is accepted, the options follow it
/// before the slot is let go, so its replacement opens with the new login.
async fn prove_in_slot(
    shared: Arc<Shared>,
    conn: &mut PgConnection,
    meta: PoolConnectionMetadata,
    login: Arc<Snapshot>,
    swept: bool,
) -> Result<bool, sqlx::Error> {
    shared.tags.closed(meta.age);
    let counters = shared.adapter.counters();
    counters.bump(Event::Canary);
    counters.bump(Event::StaleClosed);
    if swept {
        counters.bump(Event::StaleClosedIdle);
    }
    end_session(&shared, conn).await;
    if shared.adapter.prove(&login).await {
        shared.login.swapped(&login, drain::IDLE).await;
    } else {
        // Refused (or not reached): the slot's replacement opens with the login that works.
        let back = connect::wanted(shared.adapter.credentials());
        shared.login.swapped(&back, drain::IDLE).await;
    }
    Ok(false)
}

/// Ends a connection's server session before sqlx lets its slot go, so that the connect that
/// takes the slot never finds the server still holding the old session (the pool at its size
/// plus one in `pg_stat_activity`): sqlx closes a connection by sending `Terminate` and
/// releases the slot at once, before the server has ended the session, and has no hook after
/// that. Called for every connection the adapter's hooks close: a stale or expired one
/// (`before_acquire`, `after_release`), a canary's slot, and a new connection `after_connect`
/// refuses (which sqlx drops without `Terminate` before connecting again in the same place).
///
/// Straight to the server (the port it answers on is the one connected to; asked once per
/// pool), the session ends itself (`pg_terminate_backend(pg_backend_pid())`), and the hook
/// then reads until the server closes the socket. That wait is exact, not a grace period: a
/// backend leaves `pg_stat_activity` in its shared-memory exit callbacks, which run before the
/// process-exit ones that close its socket. Behind a pooler it must not: the pooler would log
/// in again with the keys of the password being replaced, and refuse every login for its
/// retry interval; there the pooler's own server sessions are not the pool's.
pub(crate) async fn end_session(shared: &Shared, conn: &mut PgConnection) {
    let direct = match shared.direct.get() {
        Some(direct) => *direct,
        None => {
            let port = sqlx::query_scalar::<_, Option<i32>>("SELECT inet_server_port()")
                .fetch_one(&mut *conn)
                .await;
            match port {
                Ok(port) => *shared.direct.get_or_init(|| {
                    port.is_some_and(|port| {
                        i64::from(port) == i64::from(shared.login.base().get_port())
                    })
                }),
                Err(_) => false,
            }
        }
    };
    if direct {
        // The server answers with 57P01 and ends the session; any outcome is fine: sqlx closes
        // the connection after the hook either way.
        let _ = conn
            .execute("SELECT pg_terminate_backend(pg_backend_pid())")
            .await;
        // Fails once the server has closed the socket (or at once if it already has).
        let _ = tokio::time::timeout(SESSION_END_MAX, conn.ping()).await;
    }
}

/// Follows the provider: swaps the pool's connect options on every new generation and sweeps
/// idle connections at once, and again at a lease's retirement point. Ends when the pool is
/// closed.
pub(crate) async fn watch(pool: PgPool, shared: Arc<Shared>) {
    let credentials = shared.adapter.credentials().clone();
    let mut changes = credentials.subscribe();
    let closed = pool.close_event();
    tokio::pin!(closed);
    let mut retired = None;
    let mut settle: Option<(Instant, Instant)> = None;
    let mut canary_asked: Option<Instant> = None;
    let mut last_proven = credentials.current().proven_generation();
    loop {
        if pool.is_closed() {
            break;
        }
        let current = credentials.current();
        let wanted = connect::wanted(&credentials);
        let now = Instant::now();
        // A swap, or a newer login accepted (the old connections are stale from now on).
        let proven = current.proven_generation();
        if shared.login.swap(&pool, &wanted) || proven != last_proven {
            last_proven = proven;
            settle = Some((now, now + SETTLE));
        }
        // Prove before drain: until the database accepts the current login, the connections of
        // the last accepted one stay, and a probe tries the current one on the canary schedule.
        // While the store is rotating, the probe tries its pending login the same way.
        let trying = !current.is_proven() || shared.adapter.is_trying_pending();
        if trying && let Some(login) = shared.adapter.take_canary(&current) {
            shared.request_canary(login);
            canary_asked = Some(now);
            // An idle connection makes room at once; otherwise the next return does.
            if let Some(conn) = pool.try_acquire() {
                shared.swept.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        }
        if let Some(asked) = canary_asked
            && now >= asked + CANARY_WAIT_MAX
        {
            // No connection came back to make room (the pool has none, or is stuck on refused
            // connects): probe beside it.
            canary_asked = None;
            if let Some(login) = shared.take_canary()
                && shared.adapter.is_canary_login(&login)
            {
                // A probe beside the pool, in a slot of its session budget.
                shared.adapter.spawn_probe(login, Duration::ZERO);
            }
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
        } else if shared.tags.any_aged() {
            // A connection reached the pool's session age: the idle ones go now, a busy one
            // at its return.
            sweep(&pool, &shared);
        }
        shared.tags.reconcile(pool.size() as usize);
        let mut wait = shared.adapter.next_sweep(&current, settle.is_some());
        if trying {
            wait = wait.min(CANARY_POLL);
        } else {
            canary_asked = None;
        }
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
    let _drain = tracing::debug_span!("credswap.drain").entered();
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
