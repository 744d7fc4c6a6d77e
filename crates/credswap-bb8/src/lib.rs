//! A [`bb8::ManageConnection`] for tokio-postgres that follows rotating database credentials.
//!
//! [`RotatingConnectionManager`] replaces `bb8_postgres::PostgresConnectionManager`: build it
//! from the same `tokio_postgres::Config` and TLS connector plus a [`RotatingCredentials`], and
//! hand it to `bb8::Pool::builder()` as before, or let [`Builder`] build the pool. A checked-out
//! connection derefs (through [`RotatingConnection`]) to `tokio_postgres::Client`, so
//! `conn.query(..)`, `conn.transaction()` and the rest keep compiling; only the pool's type
//! changes, and the [`Pool`] alias keeps it short. The [`Rotation`] handle has the adapter's
//! counters and the provider.
//!
//! ```no_run
//! # async fn example(credentials: credswap_core::RotatingCredentials) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use credswap_bb8::{Pool, RotatingConnectionManager};
//! use tokio_postgres::NoTls;
//!
//! let config: tokio_postgres::Config = "host=db.internal dbname=app".parse()?;
//! // Before: let manager = bb8_postgres::PostgresConnectionManager::new(config, NoTls);
//! let manager = RotatingConnectionManager::new(config, NoTls, credentials);
//! let rotation = manager.rotation();
//! let pool: Pool<NoTls> = bb8::Pool::builder()
//!     .max_size(16)
//!     .connection_timeout(Duration::from_secs(5))
//!     .build(manager)
//!     .await?;
//!
//! let conn = pool.get().await?;
//! let row = conn.query_one("SELECT current_user", &[]).await?;
//! println!("{} on generation {}", row.get::<_, String>(0), conn.generation());
//! println!("{:?}", rotation.stats());
//! # Ok(()) }
//! ```
//!
//! # How it follows the credential
//!
//! - `connect` reads the provider's current credential (the manager keeps no copy) and tags
//!   the connection with the generation it read *before* connecting. A login refused with
//!   SQLSTATE `28P01` or `28000` is reported to
//!   [`Feedback::report_auth_failure`](credswap_core::contract::Feedback::report_auth_failure) and the connect waits for a working
//!   credential; transient failures (connection refused, `57P03`, `53300`) are retried with
//!   backoff. Both up to the connect deadline: the pool's `connection_timeout` when the pool is
//!   built by [`Builder`], otherwise the policy's `connect_deadline`.
//! - `is_valid`, at checkout, refuses a stale connection without a round trip; otherwise it
//!   pings as `bb8-postgres` does.
//! - `has_broken`, at return, reports a stale or closed connection: a busy connection of an
//!   older credential is closed when it is returned.
//! - An idle connection of an older credential is closed by its own task within milliseconds
//!   of the change, with no extra task and no checkout.
//! - A leased credential's connections are retired before `expires_at - expiry_margin`.
//! - Everything happens inside the one bb8 pool: the number of connections never exceeds
//!   `max_size`.
//!
//! Closing idle connections needs bb8 to validate checkouts (`test_on_check_out`, on by
//! default): that is how the manager knows which connections are busy. With it off, nothing is
//! closed while idle (a busy connection is never closed under its user), stale connections are
//! still closed when returned, and a warning is logged. A connection from
//! `Pool::dedicated_connection` looks idle to the manager and is closed at the next rotation
//! unless its owner calls [`RotatingConnection::keep_open_on_rotation`].
//!
//! # Design
//!
//! How this adapter leans on bb8's behaviour (the contract itself is
//! [`credswap_core::contract`]):
//!
//! - bb8 0.9 has no drain API: from outside, a `Pool` offers `get`, `get_owned`, `add`,
//!   `dedicated_connection`, `state` and `config`; its reaper closes idle connections only by
//!   `idle_timeout`/`max_lifetime`. Rejected: a watcher that checks connections out (bb8 has no
//!   weak pool handle, so the pool would never drop; it competes with the application; with
//!   LIFO it keeps drawing the same fresh connection), and short timeouts (blind to
//!   generations).
//! - Chosen: each connection's driver task (every bb8 manager spawns one to drive the
//!   tokio-postgres `Connection`) also watches the provider and drops the `Connection` when the
//!   connection is idle and stale; the socket closes and the server ends the backend.
//! - "Idle" is known from `is_valid` (checkout marks busy) and `has_broken` (return marks idle),
//!   exact only while bb8 validates checkouts. Every phase change and every decision to retire
//!   happens under the connection's phase lock, reading the current snapshot inside it (reading
//!   it before the lock let a rotation in between leave an idle stale connection).
//! - bb8 does not say whether anyone waits for a connection: a connection checked out counts
//!   as contention for [`Adapter::probe_fits`](credswap_core::contract::Adapter::probe_fits).
//! - A closed connection stays in bb8's count until the next `get` pops it and `is_valid`
//!   refuses it; physical connections never exceed bb8's count.
//!
//! # When connecting fails
//!
//! bb8 does not show `Pool::get` why a connect failed: after `connection_timeout` (30 s by
//! default) it returns `RunError::TimedOut`. The manager logs every failed connect through
//! `tracing` at `ERROR`, naming the role, the generation, the SQLSTATE and the server's message,
//! never the password; [`AdapterStats::connect_failures`] counts them, and the provider's
//! [`health`](RotatingCredentials::health) says when the database refuses the current
//! credential:
//!
//! ```no_run
//! # async fn handler(pool: credswap_bb8::Pool<tokio_postgres::NoTls>, rotation: credswap_bb8::Rotation) -> Result<(), String> {
//! let conn = match pool.get().await {
//!     Ok(conn) => conn,
//!     Err(bb8::RunError::TimedOut) => {
//!         let health = rotation.credentials().health();
//!         return Err(match health.refused() {
//!             Some((since, count)) => format!(
//!                 "no database connection: the database refused the login {count} times in {since:?}"
//!             ),
//!             None => "no database connection: connecting fails, or every connection is busy".into(),
//!         });
//!     }
//!     Err(bb8::RunError::User(e)) => return Err(e.to_string()),
//! };
//! # drop(conn); Ok(()) }
//! ```
//!
//! # Secrets
//!
//! `tokio_postgres::Config` derives a `Debug` that prints its password: never log it. The config
//! passed here needs no password at all; the provider's login overrides the config's. The types
//! of this crate never print one.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | this crate has no optional features; the `credswap` facade re-exports it behind its feature `bb8` |

#![forbid(unsafe_code)]

mod builder;
mod connect;
mod drain;
mod error;
mod handle;
mod tag;

pub use builder::{Builder, Pool, PooledConnection, RotatingConnectionManager};
pub use error::{Error, is_auth_failure};
pub use handle::{AdapterStats, Rotation};
pub use tag::RotatingConnection;

pub use credswap_core::{Generation, RotatingCredentials};
pub use credswap_tokio_postgres::connection_validator;

/// Re-exported, as `bb8-postgres` does, so the pool and its builder are at hand.
pub use bb8;
/// Re-exported, as `bb8-postgres` does, for `NoTls`, `Config` and the client types.
pub use tokio_postgres;
