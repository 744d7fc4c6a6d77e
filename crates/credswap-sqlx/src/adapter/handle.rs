//! The handle returned beside the pool: the contract's [`Rotation`], the same for every
//! adapter, and its [`AdapterStats`]; plus [`RotationExt`], the checkouts that follow the
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
    impl Sealed for super::Rotation {}
}

/// Checkouts that wait for a working credential when a new connection's login is refused.
///
/// sqlx has no connect hook: a connect that fails inside `PgPool::acquire` reaches the caller
/// as it is. With zero-overlap (single-user) rotation the database refuses the old password
/// before the provider knows the new one, so a connect the pool needs in that window fails
/// with SQLSTATE `28P01`, and through the plain `&PgPool` API nothing reports it: the provider
/// catches up at its next scheduled refresh.
///
/// These are `PgPool::acquire` and `PgPool::begin` plus the contract's handling of refused
/// logins: on `28P01`/`28000` they report the refusal to the provider (one shared refresh
/// however many fail at once), point the pool at the newer credential at once when there is
/// one, and otherwise wait for one with backoff, asking the provider again, until the pool's
/// `acquire_timeout`. Other errors are returned as they are. Queries on `&PgPool` that need no
/// new connection are never affected.
///
/// ```no_run
/// # #[cfg(feature = "sqlx-0_8")]
/// # async fn example(pool: sqlx::PgPool, rotation: credswap_sqlx::Rotation) -> Result<(), sqlx::Error> {
/// use credswap_sqlx::RotationExt;
///
/// let mut conn = rotation.acquire(&pool).await?;
/// sqlx::query("SELECT 1").execute(&mut *conn).await?;
/// # Ok(()) }
/// ```
pub trait RotationExt: sealed::Sealed {
    /// `pool.acquire()`, following the credential through refused logins.
    fn acquire(
        &self,
        pool: &PgPool,
    ) -> impl Future<Output = Result<PoolConnection<Postgres>, sqlx::Error>> + Send + 'static;

    /// `pool.begin()`, following the credential through refused logins.
    fn begin(
        &self,
        pool: &PgPool,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Postgres>, sqlx::Error>> + Send + 'static;
}

impl RotationExt for Rotation {
    fn acquire(
        &self,
        pool: &PgPool,
    ) -> impl Future<Output = Result<PoolConnection<Postgres>, sqlx::Error>> + Send + 'static {
        let (rotation, pool) = (self.clone(), pool.clone());
        async move {
            following(Adapter::of(&rotation), &pool, |pool| async move { pool.acquire().await })
                .await
                .map_err(|failed| failed.error)
        }
    }

    fn begin(
        &self,
        pool: &PgPool,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Postgres>, sqlx::Error>> + Send + 'static
    {
        let (rotation, pool) = (self.clone(), pool.clone());
        async move {
            following(Adapter::of(&rotation), &pool, |pool| async move { pool.begin().await })
                .await
                .map_err(|failed| failed.error)
        }
    }
}
