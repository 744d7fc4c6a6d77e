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
//! use credswap_sqlx::RotatingPoolExt;
//! use sqlx::postgres::PgPoolOptions;
//!
//! // Before: let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
//! let url = "postgres://db.internal/app"; // no user or password: they come from `credentials`
//! let (pool, rotation) = credswap_sqlx::connect(PgPoolOptions::new().max_connections(8), url, credentials).await?;
//!
//! // Unchanged application code:
//! let user: String = sqlx::query_scalar("SELECT current_user").fetch_one(&pool).await?;
//! // With zero-overlap (single-user) rotation, check out through the retrying path:
//! let mut conn = pool.acquire_following().await?;
//! sqlx::query("SELECT 1").execute(&mut *conn).await?;
//! println!("{user}; {:?}", rotation.stats());
//! # Ok(()) }
//! ```
//!
//! # How it follows the credential
//!
//! - **Connect options follow the provider.** A watcher task subscribes to
//!   [`RotatingCredentials::subscribe`]; on every new generation it calls
//!   `PgPool::set_connect_options` with the base options plus the new username and password. The
//!   adapter never keeps a credential of its own: the options are rebuilt from
//!   [`RotatingCredentials::current`].
//! - **Each connection is tagged with the credential it actually used.** sqlx gives hooks no
//!   per-connection identity and no user data, only `PoolConnectionMetadata::age`, and a connect
//!   that read the options just before a swap can finish just after it. So the options also
//!   carry the generation as a custom setting in the startup packet (`-c
//!   credswap.generation=<n>`, see [Tagging](#tagging)). `after_connect` reads it back with one
//!   query per *new* connection. A connection created after a swap carries the new credential,
//!   except one whose tag is older (its connect raced the swap); `after_connect` records the
//!   instant it admits such a one, which sqlx's creation stamp follows by microseconds. So
//!   `before_acquire` / `after_release` decide staleness from `age` alone: created before the
//!   swap, or at a recorded raced instant, means stale. The hot path costs no round trip.
//! - **Idle stale connections close promptly.** Right after a swap the watcher pops every idle
//!   connection with `try_acquire` and hands it back; `after_release` closes the stale ones. It
//!   sweeps again every 25 ms for 100 ms (and for as long as waiting tasks keep it from popping;
//!   those tasks get the idle connections through `before_acquire`, which closes stale ones).
//!   Busy stale connections close when they are returned. A leased credential's connections
//!   are retired the same way once `expires_at - expiry_margin` passes.
//! - **Inside one pool.** Connections are replaced in place, under sqlx's own semaphore: the
//!   number of connections never exceeds `max_connections`.
//!
//! # Zero overlap: what sqlx allows, and what remains
//!
//! sqlx has no per-connect hook: a connect that fails inside `PgPool::acquire` is returned to
//! the caller. With single-user rotation (`ALTER ROLE ... PASSWORD` kills the old password at
//! once), a connect that the pool needs between the database change and the provider learning
//! of it fails with SQLSTATE `28P01` from `acquire`, and through plain `&PgPool` nothing reports
//! it: the provider catches up at its next scheduled refresh.
//!
//! [`RotatingPoolExt::acquire_following`] and [`RotatingPoolExt::begin_following`] are the
//! mitigation: on `28P01`/`28000` they call [`RotatingCredentials::report_auth_failure`], apply
//! the refreshed credential to the pool and retry once. What remains even then: a connect that
//! fails before the *secret store* has the new password (the retry fetches the same one); the
//! error then reaches the caller and is counted in [`AdapterStats::auth_retry_failures`].
//! Queries on `&PgPool` that need no new connection are never affected. The crate's tests run
//! the single-user scenario both ways and print the numbers.
//!
//! # Tagging
//!
//! The tag is a custom (placeholder) server setting, `credswap.generation`, sent in the startup
//! packet's `options`. It was chosen over the alternatives because it is exact and invisible in
//! the places people look: it is not in `pg_stat_activity`, does not replace your
//! `application_name`, and is not logged by `log_connections`; a session sees it only through
//! `SHOW credswap.generation`. Options you set yourself with `PgConnectOptions::options` are
//! kept. The cost is one simple query per new physical connection, never per checkout.
//!
//! A raced connect (counted in [`AdapterStats::raced_connects`]) authenticated while the old
//! credential still worked, so it is admitted: it serves the checkout it was opened for and is
//! closed when returned, or by a sweep if sqlx put it straight into the idle queue. Rejecting it
//! instead (an error from `after_connect` makes sqlx reconnect) was tried and dropped: sqlx logs
//! each rejection as an error, and when connects take longer than the time between swaps (an
//! overloaded machine, rotations seconds apart) no connect is ever admitted and the pool stalls.
//!
//! A proxy that rejects the `options` startup parameter (PgBouncer, unless it is listed in
//! `ignore_startup_parameters`) refuses such connects. If the proxy drops the option instead,
//! the connection is admitted untagged and counted in [`AdapterStats::untagged`]: staleness is
//! then judged by age alone, and a connect racing a swap can be kept.
//!
//! # Lifetime
//!
//! sqlx offers no weak pool handle, so the watcher holds one: the pool stays open until
//! `PgPool::close` is awaited (sqlx's recommended shutdown) or the Tokio runtime shuts down.
//! Dropping every handle without `close` does not close it.
//!
//! # Hooks
//!
//! The adapter installs `after_connect`, `before_acquire` and `after_release` on the
//! `PgPoolOptions` you pass, which replaces any you set there (sqlx cannot report them). Set
//! yours on the [`Builder`] instead: they run after the adapter's.
//!
//! # Secrets
//!
//! `PgConnectOptions` derives a `Debug` that prints the password: never log it, nor the `Arc`
//! that `PgPool::connect_options` returns. The options passed here need no password (the
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
    doc = "\n\n[`Rotation`]: v0_9::Rotation\n[`Builder`]: v0_9::Builder\n\
           [`RotatingPoolExt::acquire_following`]: v0_9::RotatingPoolExt::acquire_following\n\
           [`RotatingPoolExt::begin_following`]: v0_9::RotatingPoolExt::begin_following\n\
           [`AdapterStats::auth_retry_failures`]: v0_9::AdapterStats::auth_retry_failures\n\
           [`AdapterStats::untagged`]: v0_9::AdapterStats::untagged\n\
           [`AdapterStats::raced_connects`]: v0_9::AdapterStats::raced_connects"
)]
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

#[cfg(feature = "sqlx-0_8")]
pub mod v0_8;
#[cfg(feature = "sqlx-0_9")]
pub mod v0_9;

#[cfg(feature = "sqlx-0_8")]
pub use v0_8::{
    AdapterStats, Builder, Error, RotatingPoolExt, Rotation, connect, connect_lazy_with,
    connect_with, connection_validator, is_auth_failure,
};

pub use credswap_core::{Generation, RotatingCredentials};

/// The custom server setting that carries a connection's generation (see [Tagging](crate#tagging)).
pub const GENERATION_SETTING: &str = "credswap.generation";
