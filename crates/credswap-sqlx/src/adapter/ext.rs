use std::future::Future;
use std::sync::atomic::Ordering;

use super::error::is_auth_failure;
use super::sqlx;
use super::sqlx::pool::PoolConnection;
use super::sqlx::postgres::{PgPool, Postgres};
use super::state::lookup;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::PgPool {}
}

/// Checkouts that survive zero-overlap rotation: on an authentication failure they report it,
/// refresh the credential and retry once.
///
/// sqlx has no per-connect hook, so a connect that fails inside `PgPool::acquire` reaches the
/// caller. With single-user rotation the database rejects the old password before the provider
/// can know the new one; a connect the pool needs in that window fails with `28P01`. These
/// methods are `PgPool::acquire` and `PgPool::begin` plus the recovery the adapter contract asks
/// for: on `28P01`/`28000` they call
/// [`RotatingCredentials::report_auth_failure`](credswap_core::RotatingCredentials::report_auth_failure)
/// (one single-flight refresh, however many callers fail at once), point the pool at the
/// refreshed credential at once (not waiting for the watcher) and retry once. Other errors, and
/// a second failure, are returned as they are.
///
/// They work on any `&PgPool` a rotating pool was cloned from: the adapter is found through a
/// process-wide registry keyed by the pool's identity, looked up only after a failure. On a pool
/// not built by this crate (or after `close`) they are plain `acquire` and `begin`.
///
/// Queries run directly on `&PgPool` (`query(...).fetch_one(&pool)`) use plain `acquire`:
/// switch the paths that may open connections during a rotation to these methods, or accept
/// the remaining failures described in the [crate docs](crate#zero-overlap-what-sqlx-allows-and-what-remains).
pub trait RotatingPoolExt: sealed::Sealed {
    /// `PgPool::acquire`, retried once after an authentication failure and a refresh.
    fn acquire_following(
        &self,
    ) -> impl Future<Output = Result<PoolConnection<Postgres>, sqlx::Error>> + Send + 'static;

    /// `PgPool::begin`, retried once after an authentication failure and a refresh.
    fn begin_following(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Postgres>, sqlx::Error>> + Send + 'static;
}

impl RotatingPoolExt for PgPool {
    fn acquire_following(
        &self,
    ) -> impl Future<Output = Result<PoolConnection<Postgres>, sqlx::Error>> + Send + 'static {
        let pool = self.clone();
        async move {
            let first = pool.acquire().await;
            retry_after_auth_failure(
                &pool,
                first,
                |pool: PgPool| async move { pool.acquire().await },
            )
            .await
        }
    }

    fn begin_following(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Postgres>, sqlx::Error>> + Send + 'static
    {
        let pool = self.clone();
        async move {
            let first = pool.begin().await;
            retry_after_auth_failure(
                &pool,
                first,
                |pool: PgPool| async move { pool.begin().await },
            )
            .await
        }
    }
}

async fn retry_after_auth_failure<T, F, Fut>(
    pool: &PgPool,
    first: Result<T, sqlx::Error>,
    retry: F,
) -> Result<T, sqlx::Error>
where
    F: FnOnce(PgPool) -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let error = match first {
        Ok(value) => return Ok(value),
        Err(e) if is_auth_failure(&e) => e,
        Err(e) => return Err(e),
    };
    let Some(shared) = lookup(pool) else {
        return Err(error);
    };
    shared.auth_failures.fetch_add(1, Ordering::Relaxed);
    // The options the failed connect most likely used; if the watcher swapped meanwhile, the
    // report finds that generation current or older and costs at most one deduplicated fetch.
    let failed = shared.options_generation();
    let fresh = match shared.credentials.report_auth_failure(failed).await {
        Ok(fresh) => fresh,
        Err(refresh_error) => {
            tracing::error!(
                generation = failed.get(),
                error = %refresh_error,
                "authentication failed and the credential could not be refreshed"
            );
            return Err(error);
        }
    };
    shared.swap_to(pool, &fresh);
    shared.auth_retries.fetch_add(1, Ordering::Relaxed);
    match retry(pool.clone()).await {
        Ok(value) => Ok(value),
        Err(e) => {
            shared.auth_retry_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                username = %fresh.credential().username(),
                generation = fresh.generation().get(),
                error = %e,
                "checkout failed again after refreshing the credential"
            );
            Err(e)
        }
    }
}
