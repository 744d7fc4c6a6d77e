//! A drop-in [`deadpool_postgres::Pool`] that follows rotating database credentials.
//!
//! Build the pool from what you already have (a [`deadpool_postgres::Config`], or a
//! [`tokio_postgres::Config`] and a [`PoolConfig`](deadpool_postgres::PoolConfig)) plus a
//! [`RotatingCredentials`]. You get back a plain `deadpool_postgres::Pool` (every function that
//! takes a `Pool` or a `deadpool_postgres::Client` keeps compiling) and a [`Rotation`] handle
//! with the adapter's counters.
//!
//! ```no_run
//! # async fn example(credentials: credswap_core::RotatingCredentials) -> Result<(), Box<dyn std::error::Error>> {
//! use deadpool_postgres::{Config, Runtime};
//! use tokio_postgres::NoTls;
//!
//! let mut cfg = Config::new();
//! cfg.host = Some("db.internal".into());
//! cfg.dbname = Some("app".into());
//! // Before: let pool = cfg.create_pool(Some(Runtime::Tokio1), NoTls)?;
//! let (pool, rotation) = credswap_deadpool::create_pool(&cfg, NoTls, credentials)?;
//!
//! let client = pool.get().await?;
//! let row = client.query_one("SELECT current_user", &[]).await?;
//! println!("{}; {:?}", row.get::<_, String>(0), rotation.stats());
//! # Ok(()) }
//! ```
//!
//! # How it follows the credential
//!
//! - A [`Connect`](deadpool_postgres::Connect) reads
//!   [`RotatingCredentials::current`] at every connect (the adapter never keeps its own copy)
//!   and tags the connection with the generation it read *before* connecting — not with
//!   `Metrics::created`, because a connect that began under the old credential can finish after
//!   the rotation.
//! - A `pre_recycle` hook refuses connections of an older generation, so a checkout never
//!   hands one out.
//! - A watcher task subscribes to generation changes: idle stale connections are closed at once
//!   with [`Pool::retain`](deadpool_postgres::Pool::retain); busy ones are closed as soon as
//!   they are returned (the watcher keeps sweeping until none is left). It also retires
//!   connections before `expires_at - expiry_margin` of a leased credential. It ends when the
//!   pool is dropped or closed.
//! - A connect refused with SQLSTATE `28P01` or `28000` calls
//!   [`RotatingCredentials::report_auth_failure`] and is retried once with the refreshed
//!   credential.
//! - Everything happens inside the one pool: the number of connections never exceeds `max_size`.
//!
//! # Secrets
//!
//! `deadpool_postgres::Config` and `tokio_postgres::Config` derive a `Debug` that prints the
//! password: never log them. The config passed here needs no password at all; the provider's
//! username and password override the config's. The types of this crate never print one.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | this crate has no optional features |

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

mod builder;
mod connect;
mod error;
mod state;
mod watcher;

pub use builder::{Builder, connection_validator, create_pool, create_pool_from_pg_config};
pub use error::{Error, is_auth_failure};
pub use state::{AdapterStats, Rotation};

pub use credswap_core::{Generation, RotatingCredentials};
