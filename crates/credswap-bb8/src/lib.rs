//! A [`bb8::ManageConnection`] for tokio-postgres that follows rotating database credentials.
//!
//! [`RotatingConnectionManager`] replaces `bb8_postgres::PostgresConnectionManager`: build it
//! from the same `tokio_postgres::Config` and TLS connector plus a [`RotatingCredentials`], and
//! hand it to `bb8::Pool::builder()` as before. A checked-out connection derefs (through
//! [`RotatingConnection`]) to `tokio_postgres::Client`, so `conn.query(..)`,
//! `conn.transaction()` and the rest keep compiling; only the pool's type changes, and the
//! [`Pool`] alias keeps it short. The [`Rotation`] handle has the adapter's counters and the last
//! connect error.
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
//!     // bb8 shows `Pool::get` no connect error, only a timeout: keep it short.
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
//! - `connect` reads [`RotatingCredentials::current`] (the manager never keeps its own copy)
//!   and tags the connection with the generation it read *before* connecting, because a
//!   connect that began under the old credential can finish after the rotation.
//! - `is_valid`, at checkout, refuses a connection of an older generation without a round
//!   trip, so a checkout never hands one out; otherwise it pings as `bb8-postgres` does.
//! - `has_broken`, at return, reports a stale or closed connection: a busy connection of an
//!   older credential is closed when it is returned.
//! - An idle connection of an older credential closes at once, by itself (next section).
//! - A connect refused with SQLSTATE `28P01` or `28000` calls
//!   [`RotatingCredentials::report_auth_failure`] and is retried once with the refreshed
//!   credential.
//! - A leased credential's connections are retired before `expires_at - expiry_margin`.
//! - Everything happens inside the one bb8 pool: the number of connections never exceeds
//!   `max_size`.
//!
//! # Draining without a drain API
//!
//! bb8 cannot remove idle connections from outside: its reaper closes them only by
//! `idle_timeout` and `max_lifetime`, every 30 s, and the manager is consulted only at checkout
//! and return. A watcher that checks idle connections out to get them refused would need a
//! `Pool` handle in a background task (bb8 has no weak one, so the pool would never drop), and
//! would compete with the application for connections.
//!
//! So each connection closes itself: the task that drives the tokio-postgres `Connection` (which
//! every manager spawns) also watches [`RotatingCredentials::subscribe`]. When the generation
//! changes while the connection is idle, it closes the socket, within milliseconds of the
//! change and with no extra task, no pool handle and no checkout. bb8 still counts the
//! closed connection until the next `get` pops it, where `is_valid` refuses it without a round
//! trip and bb8 opens a replacement with the new credential.
//!
//! Measured by the test `idle_stale_connections_close_within_milliseconds_of_the_change` (eight
//! idle connections, five rotations, debug build, a busy 2-core VM): the last socket of the old
//! generation closed 0.6 to 18 ms after the change (median 1 to 9 ms across runs), and
//! PostgreSQL had ended the last backend 11 to 34 ms after it, where bb8's reaper would take
//! 30 s at best. Most of that is the VM waking an idle runtime thread: once running, the tasks
//! closed all eight within 0.6 ms.
//!
//! This needs bb8 to validate checkouts (`test_on_check_out`, on by default): that is how the
//! manager knows which connections are busy. With it off, nothing is closed while idle, and a
//! warning is logged. A connection from `Pool::dedicated_connection` looks idle to the manager
//! and is closed at the next rotation unless its owner calls
//! [`RotatingConnection::keep_open_on_rotation`].
//!
//! # When connecting fails
//!
//! bb8 does not show `Pool::get` why a connect failed: it retries in the background and, after
//! `connection_timeout` (30 s by default), returns `RunError::TimedOut`. This manager makes the
//! cause visible: every failed connect is counted ([`AdapterStats::connect_failures`],
//! [`AdapterStats::consecutive_connect_failures`]), logged through `tracing` at `ERROR` (the
//! 1st, 2nd, 4th, 8th... of a streak), and kept for [`Rotation::last_connect_error`], which
//! names the role and the server's message (`password authentication failed for user "app"`)
//! and never the password. Set `connection_timeout` to a few seconds, and on `TimedOut` say
//! why:
//!
//! ```no_run
//! # async fn handler(pool: credswap_bb8::Pool<tokio_postgres::NoTls>, rotation: credswap_bb8::Rotation) -> Result<(), String> {
//! let conn = match pool.get().await {
//!     Ok(conn) => conn,
//!     Err(bb8::RunError::TimedOut) => {
//!         // Connecting fails right now, or every connection was busy.
//!         let cause = match rotation.last_connect_error() {
//!             Some(e) if rotation.stats().consecutive_connect_failures > 0 => e.to_string(),
//!             _ => "every connection is busy".to_owned(),
//!         };
//!         return Err(format!("no database connection: {cause}"));
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
#![warn(missing_docs, missing_debug_implementations)]

mod connect;
mod connection;
mod driver;
mod error;
mod manager;
mod state;

pub use connection::RotatingConnection;
pub use error::{Error, is_auth_failure};
pub use manager::{Pool, PooledConnection, RotatingConnectionManager, connection_validator};
pub use state::{AdapterStats, Rotation};

pub use credswap_core::{Generation, RotatingCredentials};

/// Re-exported, as `bb8-postgres` does, so the pool and its builder are at hand.
pub use bb8;
/// Re-exported, as `bb8-postgres` does, for `NoTls`, `Config` and the client types.
pub use tokio_postgres;
