//! The adapter for sqlx 0.9 (feature `sqlx-0_9`; needs Rust 1.94, as sqlx 0.9 does).
//!
//! The same API as [the crate root](crate) (which re-exports the 0.8 adapter), compiled against
//! sqlx 0.9: use `credswap_sqlx::v0_9::connect` and friends with a `sqlx` 0.9 dependency.
//!
//! ```no_run
//! # async fn example(credentials: credswap_core::RotatingCredentials) -> Result<(), Box<dyn std::error::Error>> {
//! # use sqlx09 as sqlx;
//! use credswap_sqlx::v0_9::{self as rotating, PoolExt};
//! use sqlx::postgres::PgPoolOptions;
//!
//! let url = "postgres://db.internal/app";
//! let (pool, rotation) = rotating::connect(PgPoolOptions::new().max_connections(8), url, credentials).await?;
//! let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await?;
//! let mut conn = pool.acquire_following(&rotation).await?;
//! sqlx::query("SELECT 1").execute(&mut *conn).await?;
//! # let _ = one;
//! # Ok(()) }
//! ```

// The files under adapter/ are compiled once per sqlx version, on purpose.
#![allow(clippy::duplicate_mod)]

use ::sqlx09 as sqlx;

// The adapter's modules, the same for every sqlx version.
include!("adapter/modules.rs");
