//! The handle returned beside the pool: the contract's [`Rotation`], the same for every
//! adapter, and its [`AdapterStats`]; plus [`PoolExt`], the checkouts that follow the
//! credential through refused logins.

use std::future::Future;

use credswap_core::contract::Adapter;
pub use credswap_core::contract::{AdapterStats, Rotation};

use super::connect::following;
use super::sqlx;
use super::sqlx::pool::PoolConnection;
use super::sqlx::postgres::{PgPool, Postgres};

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::PgPool {}
}

/// Checkouts that wait for a working credential when a new connection's login is refused:
/// `pool.acquire_following(&rotation)` and `pool.begin_following(&rotation)`.
///
/// sqlx has no connect hook: a connect that fails inside `PgPool::acquire` reaches the caller
/// as it is (launchbadge/sqlx#3117). With zero-overlap (single-user) rotation the database
/// refuses the old password before the provider knows the new one, so a connect the pool needs
/// in that window fails with SQLSTATE `28P01`, and through the plain `&PgPool` API nothing
/// reports it: the provider catches up at its next scheduled refresh or pending trial.
///
/// These are `PgPool::acquire` and `PgPool::begin` plus the contract's handling of refused
/// logins: on `28P01`/`28000` the contract's
/// [`Connector`](credswap_core::contract::Connector) reports the refusal, finds the login that
/// works (a newer credential, the store's pending one, the last accepted one) and proves it with
/// one session of its own; once the pool's options carry it the checkout is tried again, all
/// within the pool's `acquire_timeout`. Other errors are returned as they are. Queries on
/// `&PgPool` that need no new connection are never affected.
///
/// ```no_run
/// # #[cfg(feature = "sqlx-0_8")]
/// # async fn example(pool: sqlx::PgPool, rotation: credswap_sqlx::Rotation) -> Result<(), sqlx::Error> {
/// use credswap_sqlx::PoolExt;
///
/// let mut conn = pool.acquire_following(&rotation).await?;
/// sqlx::query("SELECT 1").execute(&mut *conn).await?;
/// # Ok(()) }
/// ```
pub trait PoolExt: sealed::Sealed {
    /// `pool.acquire()`, following the credential of `rotation` through refused logins.
    fn acquire_following(
        &self,
        rotation: &Rotation,
    ) -> impl Future<Output = Result<PoolConnection<Postgres>, sqlx::Error>> + Send + 'static;

    /// `pool.begin()`, following the credential of `rotation` through refused logins.
    fn begin_following(
        &self,
        rotation: &Rotation,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Postgres>, sqlx::Error>> + Send + 'static;
}

impl PoolExt for PgPool {
    fn acquire_following(
        &self,
        rotation: &Rotation,
    ) -> impl Future<Output = Result<PoolConnection<Postgres>, sqlx::Error>> + Send + 'static {
        let (rotation, pool) = (rotation.clone(), self.clone());
        async move {
            following(Adapter::of(&rotation), &pool, |pool| async move { pool.acquire().await })
                .await
                .map_err(|failed| failed.error)
        }
    }

    fn begin_following(
        &self,
        rotation: &Rotation,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Postgres>, sqlx::Error>> + Send + 'static
    {
        let (rotation, pool) = (rotation.clone(), self.clone());
        async move {
            following(Adapter::of(&rotation), &pool, |pool| async move { pool.begin().await })
                .await
                .map_err(|failed| failed.error)
        }
    }
}
