//! A plain [`sqlx::PgPool`](https://docs.rs/sqlx/0.8/sqlx/type.PgPool.html) that follows rotating
//! database credentials.
//!
//! Build the pool from what you already have (a `PgConnectOptions` or a URL, and a
//! `PgPoolOptions`) plus a [`RotatingCredentials`]. You get back a plain `sqlx::PgPool` (so
//! `query(...).fetch_one(&pool)` and every function taking `&PgPool` keep compiling) and a
//! [`Rotation`] handle with the adapter's counters.
//!
//! ```no_run
//! # #[cfg(feature = "sqlx-0_8")]
//! # async fn example(credentials: credswap_core::RotatingCredentials) -> Result<(), Box<dyn std::error::Error>> {
//! use credswap_sqlx::PoolExt;
//! use sqlx::postgres::PgPoolOptions;
//!
//! // Before: let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
//! let url = "postgres://db.internal/app"; // no user or password: they come from `credentials`
//! let (pool, rotation) = credswap_sqlx::connect(PgPoolOptions::new().max_connections(8), url, credentials).await?;
//!
//! // Unchanged application code:
//! let user: String = sqlx::query_scalar("SELECT current_user").fetch_one(&pool).await?;
//! // A checkout that waits for a working credential when a new login is refused:
//! let mut conn = pool.acquire_following(&rotation).await?;
//! sqlx::query("SELECT 1").execute(&mut *conn).await?;
//! println!("{user}; {:?}", rotation.stats());
//! # Ok(()) }
//! ```
//!
//! # How it follows the credential
//!
//! - **Connect**: a watcher task points the pool's connect options
//!   (`PgPool::set_connect_options`) at the provider's current credential on every new
//!   generation. `after_connect` refuses a new connection that may have authenticated with a
//!   credential the provider has replaced (its connect read the options just before a swap, or
//!   before the watcher caught up with the provider): sqlx logs the refusal and connects again
//!   with the current options after a backoff step. So a connect that takes longer than the
//!   time between two rotations never succeeds. Every connection it keeps is tagged with its
//!   [`ConnectionTag`](credswap_core::contract::ConnectionTag). Nothing is sent to the server
//!   for this: no query, no startup parameter, so poolers that refuse unknown startup
//!   parameters (PgBouncer, RDS Proxy) are fine.
//! - **Checkout**: `before_acquire` closes a stale connection (an older generation, or a lease
//!   within `expiry_margin` of its end) instead of handing it out; `after_release` closes a
//!   stale connection when it is returned. While the watcher has not yet swapped the options,
//!   a stale connection is closed only once it has, so that its replacement connects with the
//!   new credential.
//! - **Drain**: right after a swap, and at a lease's retirement point, the watcher takes every
//!   idle connection out of the pool and hands it back, so `after_release` closes the stale
//!   ones at once.
//! - Everything happens inside the one pool, under sqlx's own semaphore: it never holds more
//!   than `max_connections` connections.
//! - **Refused logins**: sqlx has no connect hook, so a connect refused inside
//!   `PgPool::acquire` (SQLSTATE `28P01`, e.g. a single-user rotation's password changed in the
//!   database before the provider knows the new one) reaches the caller, and nothing reports it
//!   to the provider. [`PoolExt::acquire_following`] and [`PoolExt::begin_following`] are the checkouts that
//!   follow the contract there: they report the refusal and wait for a working credential.
//! - Your own hooks: [`Builder::after_connect`], [`Builder::before_acquire`] and
//!   [`Builder::after_release`].
//!
//! # Design
//!
//! How this adapter leans on sqlx's behaviour (the contract itself is
//! `credswap_core::contract`):
//!
//! - sqlx 0.8/0.9 have no connect hook (launchbadge/sqlx#3117) and no weak pool handle. New
//!   connections get the credential through `PgPool::set_connect_options`, called by a watcher
//!   task.
//! - The tag needs no server round trip and sends nothing to the server (sending
//!   `options=-c credswap.generation=N` was tried: PgBouncer and RDS Proxy refuse it): sqlx
//!   reads its options `Arc` when a connect attempt starts and holds it until that attempt's
//!   `after_connect` returns, so `after_connect` refuses a connection while an `Arc` replaced by
//!   a swap is still held, and sqlx connects again with the new options (it retries
//!   `after_connect` errors with backoff, re-reading the options). A test proves this on 0.8.6
//!   and 0.9.0.
//! - **Prove before drain, through the options**: they carry the current login unless the
//!   database has refused it, never accepted it, and the last accepted login is still within its
//!   lease; then they go back to that one. While the current login is unproven, the watcher asks for a canary on the
//!   contract's schedule: the next connection returned (or an idle one it pops) gives its slot
//!   to the adapter's probe, *inside* the slot (sqlx lets a slot go only after the connection
//!   in it is closed, and a waiting task takes it at once): straight to the server the session
//!   first ends itself (`pg_terminate_backend(pg_backend_pid())`); behind a pooler it does not,
//!   since the pooler would log in again with the replaced password's keys and refuse logins
//!   for `server_login_retry`. When no connection comes back within 500 ms the probe runs
//!   beside the pool, in a slot of its session budget (the pool's own sessions hold one each).
//! - The adapter's own sessions (probes, the validator, the proof after a refused checkout) go
//!   through the contract's `Driver`, on a thread of their own: sqlx 0.9 yields to the
//!   scheduler every 5 of SCRAM's 4096 rounds, and on a runtime busy with 16 workers on 2 cores
//!   one login took 1–3 s.
//!
//! # Lifetime
//!
//! sqlx has no weak pool handle, and swapping the connect options needs a `PgPool`: the
//! watcher holds one. The pool stays open until `PgPool::close` is called (sqlx's shutdown)
//! or the Tokio runtime shuts down; then the watcher ends, and the provider is let go once
//! the application's `PgPool` clones are dropped too. Dropping every `PgPool` clone without
//! `close` does not close the pool.
//!
//! # Counters
//!
//! sqlx closes some connections without telling a hook (`max_lifetime`, `idle_timeout`, a
//! failed ping): their live counts in [`AdapterStats`] are let go when the watcher next
//! compares them with `PgPool::size`, within a second.
//!
//! # Secrets
//!
//! `PgConnectOptions` derives a `Debug` that prints the password: never log it, nor the `Arc`
//! that `PgPool::connect_options` returns. Do not keep that `Arc` either: while one the pool
//! has replaced is held, new connections count as possibly raced and are refused, for up to
//! the pool's `acquire_timeout` after the swap. The options passed here need no password (the
//! provider's username and password override theirs). The types of this crate never print one.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sqlx-0_8` | yes | the adapter for sqlx 0.8, in `v0_8` and re-exported at the top level |
//! | `sqlx-0_9` | | the adapter for sqlx 0.9, in `v0_9` (needs Rust 1.94, as sqlx 0.9 does) |
//!
//! Both can be enabled at once; the top level always re-exports 0.8 (when enabled), so
//! enabling `sqlx-0_9` elsewhere in a dependency graph never changes what `credswap_sqlx::X`
//! names. With sqlx 0.9 only, use `credswap_sqlx::v0_9`. TLS: enable a TLS feature on your own
//! `sqlx` dependency; Cargo unifies it with this crate's.

// The links above name the top-level re-exports, which exist with sqlx 0.8; with 0.9 alone
// they point into `v0_9`.
#![cfg_attr(
    all(feature = "sqlx-0_9", not(feature = "sqlx-0_8")),
    doc = "\n\n[`Rotation`]: v0_9::Rotation\n[`Builder::after_connect`]: v0_9::Builder::after_connect\n\
           [`Builder::before_acquire`]: v0_9::Builder::before_acquire\n\
           [`Builder::after_release`]: v0_9::Builder::after_release\n\
           [`PoolExt::acquire_following`]: v0_9::PoolExt::acquire_following\n\
           [`PoolExt::begin_following`]: v0_9::PoolExt::begin_following\n\
           [`AdapterStats`]: v0_9::AdapterStats"
)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

#[cfg(feature = "sqlx-0_8")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlx-0_8")))]
pub mod v0_8;
#[cfg(feature = "sqlx-0_9")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlx-0_9")))]
pub mod v0_9;

#[cfg(feature = "sqlx-0_8")]
pub use v0_8::{
    AdapterStats, Builder, Error, PoolExt, Rotation, VALIDATION_TIMEOUT, connect,
    connect_lazy_with, connect_with, connection_validator, is_auth_failure,
};

pub use credswap_core::{Generation, RotatingCredentials};
