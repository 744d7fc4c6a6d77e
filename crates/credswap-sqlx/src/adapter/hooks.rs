use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::sqlx;
use super::sqlx::pool::PoolConnectionMetadata;
use super::sqlx::postgres::{PgConnection, PgPoolOptions};
use super::sqlx::{Executor, Row};
use super::state::Shared;

/// The future a pool hook returns (sqlx's `BoxFuture`).
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An `after_connect` hook, as `PgPoolOptions::after_connect` takes it.
pub(crate) type ConnectHook = Arc<
    dyn for<'c> Fn(
            &'c mut PgConnection,
            PoolConnectionMetadata,
        ) -> BoxFuture<'c, Result<(), sqlx::Error>>
        + Send
        + Sync,
>;

/// A `before_acquire` or `after_release` hook.
pub(crate) type CheckHook = Arc<
    dyn for<'c> Fn(
            &'c mut PgConnection,
            PoolConnectionMetadata,
        ) -> BoxFuture<'c, Result<bool, sqlx::Error>>
        + Send
        + Sync,
>;

/// Reads the tag back. `missing_ok`, so a session without the setting yields NULL, not an
/// error. A simple query: nothing is prepared or added to the connection's statement cache.
const TAG_QUERY: &str = "SELECT current_setting('credswap.generation', true)";

/// The application's own hooks, run after the adapter's.
#[derive(Default, Clone)]
pub(crate) struct UserHooks {
    pub(crate) after_connect: Option<ConnectHook>,
    pub(crate) before_acquire: Option<CheckHook>,
    pub(crate) after_release: Option<CheckHook>,
}

/// Installs the adapter's hooks (and the application's, chained) on `options`.
pub(crate) fn install(
    options: PgPoolOptions,
    shared: &Arc<Shared>,
    user: UserHooks,
) -> PgPoolOptions {
    let on_connect = Arc::clone(shared);
    let on_acquire = Arc::clone(shared);
    let on_release = Arc::clone(shared);
    let UserHooks {
        after_connect,
        before_acquire,
        after_release,
    } = user;
    options
        .after_connect(move |conn, meta| {
            let shared = Arc::clone(&on_connect);
            let user = after_connect.clone();
            Box::pin(async move {
                let admission = shared.admit(tag_of(conn).await?);
                if let Some(user) = user {
                    user(conn, meta).await?;
                }
                shared.admitted(admission);
                Ok(())
            })
        })
        .before_acquire(move |conn, meta| check(&on_acquire, before_acquire.as_ref(), conn, meta))
        .after_release(move |conn, meta| check(&on_release, after_release.as_ref(), conn, meta))
}

/// The generation the connection's session reports, if any.
async fn tag_of(conn: &mut PgConnection) -> Result<Option<u64>, sqlx::Error> {
    // `Executor` directly (a boxed future): `raw_sql(..).fetch_one` trips sqlx's lifetimes here.
    let row = conn.fetch_one(TAG_QUERY).await?;
    let tag: Option<String> = row.try_get(0)?;
    Ok(tag.and_then(|t| t.parse().ok()))
}

/// `before_acquire` and `after_release`: close a stale connection, else ask the application.
fn check<'c>(
    shared: &Shared,
    user: Option<&CheckHook>,
    conn: &'c mut PgConnection,
    meta: PoolConnectionMetadata,
) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
    if shared.is_stale(meta.age) {
        shared.stale_closed.fetch_add(1, Ordering::Relaxed);
        return Box::pin(ready(Ok(false)));
    }
    match user {
        Some(user) => user(conn, meta),
        None => Box::pin(ready(Ok(true))),
    }
}
