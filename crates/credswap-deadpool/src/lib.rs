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
//! - **Connect**: every connection is opened with
//!   the provider's current credential through the contract's
//!   [`Connector`](credswap_core::contract::Connector), and tagged with the generation read
//!   before connecting. A login refused with SQLSTATE `28P01` or `28000` is reported to the
//!   provider and the connect waits for a credential that works, until shortly before the
//!   pool's `timeouts.create` or `timeouts.wait` (or the policy's `connect_deadline`). A connect
//!   that fails for good returns the driver's last error, so `Pool::get` fails with
//!   `PoolError::Backend` naming the role.
//! - **Checkout**: a `pre_recycle` hook refuses a stale connection (an older generation, or a
//!   lease within `expiry_margin` of its end), so a checkout never hands one out.
//! - **Drain**: a watcher task closes idle stale connections with
//!   [`Pool::retain`](deadpool_postgres::Pool::retain) as soon as the generation changes and
//!   at a lease's retirement point; a busy one is closed soon after it is returned. The watcher
//!   ends when the pool is dropped or closed.
//! - Everything happens inside the one pool: it never holds more than `max_size` connections.
//! - Your own hooks: [`Builder::post_create`], [`Builder::pre_recycle`] and
//!   [`Builder::post_recycle`] add them after the adapter's.
//!
//! # Secrets
//!
//! `deadpool_postgres::Config` and `tokio_postgres::Config` derive a `Debug` that prints the
//! password: never log them. The config passed here needs no password at all; the provider's
//! username and password are used, and the pool's manager keeps none. The types of this crate
//! never print one.
//!
//! # Versions
//!
//! The adapter hands each connection's tag from its connect to its `post_create` hook on the
//! same thread, which relies on deadpool running the two in one poll. The workspace pins
//! `deadpool-postgres` and `deadpool` to the releases a test of this crate proves that on.
//!
//! # Design
//!
//! How this adapter leans on deadpool's behaviour (the contract itself is
//! [`credswap_core::contract`]):
//!
//! - deadpool's `Connect` returns only the client; the `ConnectionTag` reaches the
//!   `post_create` hook through a thread-local set at the end of the connect and taken by the
//!   hook. deadpool runs `Manager::create` and then the `post_create` hooks in one future with
//!   no suspension point between them: both run within one poll, on one thread, so no other
//!   connect on that thread can interleave. A unit test on a one-worker runtime runs dozens of
//!   concurrent creates during rotations and checks every connection's tag against
//!   `current_user` (it fails if a yield is put between the two).
//! - Tags are kept in a map keyed by the address of the connection's statement cache (the one
//!   `Arc` a `ClientWrapper` owns for its whole life); the map holds a `Weak` to it, so the
//!   address cannot be reused while the entry exists. The map lives in the adapter's values,
//!   not in a global.
//! - The tag is taken before connecting, not from `Metrics::created`: a connect that began
//!   under the old credential can finish after the rotation.
//! - Drain: `pre_recycle` refuses a stale connection at checkout; a watcher task (holding a
//!   `WeakPool`) closes idle ones with `Pool::retain` and ends when the pool's manager is
//!   dropped. A canary taken there is followed by a probe when
//!   [`Adapter::probe_fits`](credswap_core::contract::Adapter::probe_fits) (`Status::waiting`
//!   says whether anyone waits).
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | this crate has no optional features |

#![forbid(unsafe_code)]

mod builder;
mod connect;
mod drain;
mod error;
mod handle;
mod tag;

pub use builder::{Builder, create_pool, create_pool_from_pg_config};
pub use error::{Error, is_auth_failure};
pub use handle::{AdapterStats, Rotation};

/// A validate-before-swap check that logs in with the candidate credential and closes the
/// session, bounded by the config's `connect_timeout`; pass it to
/// [`RotatingCredentialsBuilder::validator`](credswap_core::RotatingCredentialsBuilder::validator).
pub use credswap_tokio_postgres::connection_validator;

pub use credswap_core::{Generation, RotatingCredentials};
