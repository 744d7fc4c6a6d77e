//! The adapter contract as tests: one suite every pool adapter runs.
//!
//! An adapter's test crate implements [`Adapter`] for its pool (build a pool from a provider
//! and a max size, check out a connection, count the pool's connections) and calls
//! [`conformance_suite!`](crate::conformance_suite) with it. Each case in [`cases`] is then a
//! test of that crate, against a real PostgreSQL with scram-sha-256:
//!
//! ```ignore
//! struct Deadpool;
//!
//! #[async_trait::async_trait]
//! impl credswap_testkit::conformance::Adapter for Deadpool { /* ... */ }
//!
//! credswap_testkit::conformance_suite!(Deadpool);
//! ```
//!
//! A condition the contract gains is added here once, as a case, and holds for every adapter.
//! A case an adapter cannot pass (yet) is still a test of that adapter, ignored with its reason
//! (`skip`), so `cargo test` lists it:
//!
//! ```ignore
//! credswap_testkit::conformance_suite!(Sqlx,
//!     skip {
//!         dropping_the_pool_stops_every_task => "sqlx has no weak pool handle",
//!     },
//!     skip through_pgbouncer {
//!         a_throttling_store_fails_no_request => "the reason",
//!     },
//! );
//! ```

pub mod cases;
mod misbehaving;
mod rejected;
mod store;

use async_trait::async_trait;
use credswap_core::contract::Rotation;
use credswap_core::contract::limits::SessionLimits;
use credswap_core::{BoxError, RotatingCredentials, Validate};

use crate::TestPostgres;
use crate::harness::{self, TestServer};
pub use crate::tls::TlsConnect;

/// Who a session is: `current_user` and `pg_backend_pid()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whoami {
    /// `current_user`.
    pub user: String,
    /// `pg_backend_pid()`.
    pub pid: i32,
}

/// A connection checked out of the pool under test; dropping it returns it to the pool.
#[async_trait]
pub trait Session: Send {
    /// Runs `sql` (one or more statements, no parameters, results ignored).
    async fn execute(&mut self, sql: &str) -> Result<(), BoxError>;

    /// `SELECT current_user, pg_backend_pid()`.
    async fn whoami(&mut self) -> Result<Whoami, BoxError>;
}

/// What the conformance suite needs from an adapter.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// The pool type the adapter returns (`deadpool_postgres::Pool`, `bb8::Pool<..>`,
    /// `sqlx::PgPool`).
    type Pool: Clone + Send + Sync + 'static;

    /// The adapter's name, for messages.
    const NAME: &'static str;

    /// Builds a pool on `pg` (its host, port and database; no login) following `credentials`,
    /// with at most `max_size` connections and a checkout timeout of about 10 s.
    async fn build(
        pg: &TestPostgres,
        credentials: RotatingCredentials,
        max_size: usize,
    ) -> Result<(Self::Pool, Rotation), BoxError>;

    /// Builds a pool as [`build`](Self::build) does, with the adapter builder's session age and
    /// connect pace set from `limits` (`max_session_age`, `max_connects_per_second`).
    async fn build_limited(
        pg: &TestPostgres,
        credentials: RotatingCredentials,
        max_size: usize,
        limits: SessionLimits,
    ) -> Result<(Self::Pool, Rotation), BoxError>;

    /// Checks a connection out through the pool's plain API.
    async fn checkout(pool: &Self::Pool) -> Result<Box<dyn Session>, BoxError>;

    /// The adapter's validate-before-swap check (open one connection with the candidate
    /// credential) for `pg`.
    fn validator(pg: &TestPostgres) -> Box<dyn Validate>;

    /// The pool's own count of its connections (idle and busy).
    fn size(pool: &Self::Pool) -> usize;

    /// Builds a pool as [`build`](Self::build) does on a cluster started with TLS
    /// ([`tls::postgres`](crate::tls::postgres)), connecting as `tls` says (`verify-full`
    /// trusting one CA under one name, or no TLS).
    async fn build_tls(
        pg: &TestPostgres,
        tls: &TlsConnect,
        credentials: RotatingCredentials,
        max_size: usize,
    ) -> Result<(Self::Pool, Rotation), BoxError>;

    /// The adapter's validator ([`validator`](Self::validator)) connecting as `tls` says.
    fn validator_tls(pg: &TestPostgres, tls: &TlsConnect) -> Box<dyn Validate>;

    /// Opens one connection of the pool and returns the connect's own error when it fails. By
    /// default a [`checkout`](Self::checkout); a pool whose checkout reports only its own
    /// timeout (bb8) opens one another way.
    async fn connect(pool: &Self::Pool) -> Result<Box<dyn Session>, BoxError> {
        Self::checkout(pool).await
    }

    /// Builds a pool following `credentials` (lazily, on any address) where no Tokio runtime
    /// runs, the suite calls it on a thread of its own, without `.await` (an async builder is
    /// polled once, [`poll_once`]), and returns what the builder said: it must be an error
    /// that says so, not a panic.
    fn build_outside_runtime(credentials: RotatingCredentials) -> Result<(), BoxError>;

    /// Builds a pool following `credentials` (lazily, on any address; where the adapter's own
    /// config can carry a password, with `secret` as that password too) and returns the
    /// `Debug` of what the application holds, each named: the builder, the pool, the handle.
    async fn printed(
        credentials: RotatingCredentials,
        secret: &str,
    ) -> Result<Vec<(&'static str, String)>, BoxError>;

    /// Checks out, asks who the session is, and returns the connection.
    async fn whoami(pool: &Self::Pool) -> Result<Whoami, BoxError> {
        let mut session = Self::checkout(pool).await?;
        session.whoami().await
    }
}

/// Polls `future` once, with a waker that does nothing: what an async builder does when no
/// runtime drives it (see [`Adapter::build_outside_runtime`]). `None` when it is not ready.
pub fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// Where the pool under test connects: straight to the server, or through a pooler.
#[async_trait]
pub trait Route: Send + Sync + 'static {
    /// A server for a light case.
    async fn postgres() -> TestServer;
    /// A server for a load scenario, which runs alone.
    async fn postgres_alone() -> TestServer;
}

/// Pools connect straight to PostgreSQL.
#[derive(Debug)]
pub struct Direct;

#[async_trait]
impl Route for Direct {
    async fn postgres() -> TestServer {
        harness::postgres().await
    }
    async fn postgres_alone() -> TestServer {
        harness::postgres_alone().await
    }
}

/// Pools connect through a real PgBouncer (session mode, SCRAM pass-through,
/// `ignore_startup_parameters = extra_float_digits`); roles, rotations and `pg_stat_activity`
/// go straight to the server. PgBouncer keeps a server session up to its idle timeout (1 s here)
/// after the pool closed the client connection, so the cases allow that much more time for a
/// session to leave the server, and judge the pool's size by the pool's own count.
#[derive(Debug)]
pub struct ThroughPgBouncer;

#[async_trait]
impl Route for ThroughPgBouncer {
    async fn postgres() -> TestServer {
        harness::postgres().await.through_pgbouncer().await
    }
    async fn postgres_alone() -> TestServer {
        harness::postgres_alone().await.through_pgbouncer().await
    }
}

/// Expands to one `#[tokio::test]` per conformance case for `$adapter` (a type implementing
/// [`Adapter`]): every case straight to the server, with the cases that take no route (their own
/// TLS cluster, or no server at all), and in a module `through_pgbouncer` every case through a
/// real PgBouncer; there, a case the suite runs straight to the server only is ignored with that
/// reason. The list of cases is written once, here.
///
/// Optional blocks, in this order, ignore cases for this adapter with a reason (`cargo test`
/// prints it; `--ignored` runs them): `skip { case => "reason", ... }` on every route,
/// `skip direct { ... }` straight to the server (and the route-free cases), and
/// `skip through_pgbouncer { ... }` through PgBouncer. A name that is not a case of the suite
/// does not compile ("cannot find value `...` in module `__conformance_cases`").
#[macro_export]
macro_rules! conformance_suite {
    (
        $adapter:ty
        $(, skip { $($all:ident => $all_reason:literal),* $(,)? })?
        $(, skip direct { $($direct:ident => $direct_reason:literal),* $(,)? })?
        $(, skip through_pgbouncer { $($bouncer:ident => $bouncer_reason:literal),* $(,)? })?
        $(,)?
    ) => {
        $crate::__conformance_emit! {
            [$] $adapter;
            skip_direct [$($($all => $all_reason,)*)? $($($direct => $direct_reason,)*)?]
            skip_bouncer [$($($all => $all_reason,)*)? $($($bouncer => $bouncer_reason,)*)?]
            routed [
                alternating_users_rotation_loses_no_request,
                single_user_rotation_loses_no_request,
                idle_stale_connections_close_after_a_change,
                busy_connection_commits_across_rotation_then_closes_on_return,
                never_more_connections_than_max_size,
                auth_failure_at_connect_waits_for_the_new_credential,
                the_pending_credential_bridges_a_single_user_rotation,
                a_full_pool_moves_to_the_pending_credential_before_the_store_finishes,
                persistent_wrong_password_fails_clearly_without_the_secret,
                a_mistyped_secret_keeps_the_pool_serving,
                a_password_replaced_before_the_store_is_read_keeps_the_pool_serving,
                leased_credential_connections_retire_before_expiry,
                a_stuck_pending_version_fails_nothing_and_stops_being_tried,
                a_reverted_rotation_is_followed_back_without_a_restart,
                a_pending_version_moved_mid_trial_is_never_published_unproven,
                a_black_holed_store_bounds_every_checkout,
                a_throttling_store_fails_no_request,
                a_vault_lease_revoked_from_outside_is_replaced,
                connect_pacing_caps_logins_per_second,
            ]
            direct_only [
                rotations_every_200ms_under_128_workers_stay_within_the_pool,
                minted_tokens_refresh_under_load_without_closing_a_session,
                max_session_age_retires_sessions_within_the_pool_size,
                a_login_that_requires_tls_refuses_a_pool_without_it,
                validate_before_swap_keeps_the_working_credential,
                dropping_the_pool_stops_every_task,
                nothing_prints_the_password,
                a_server_restart_fails_only_requests_in_flight,
                a_pg_hba_rejection_fails_fast_as_a_configuration_error,
                a_stuck_awspending_on_secrets_manager_fails_nothing,
                a_reverted_rotation_on_secrets_manager_is_followed_back,
                a_rotation_reverted_while_the_pool_moves_is_followed_back,
            ]
            unrouted [
                rotations_over_verify_full_lose_no_request,
                verify_full_refuses_a_wrong_host_name_at_once,
                verify_full_refuses_an_untrusted_ca_at_once,
                the_server_refuses_a_login_without_tls,
                the_validator_connects_over_verify_full,
                building_outside_a_runtime_is_a_clear_error,
                the_builder_and_the_pool_print_no_secret,
            ]
        }
    };
}

/// The expansion of [`conformance_suite!`]: `$d` is a `$` for the route macros it defines (one
/// arm per skipped case, which adds `#[ignore]`, and one for every other case).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_emit {
    (
        [$d:tt] $adapter:ty;
        skip_direct [$($sd:ident => $sd_reason:literal,)*]
        skip_bouncer [$($sb:ident => $sb_reason:literal,)*]
        routed [$($routed:ident,)*]
        direct_only [$($direct_only:ident,)*]
        unrouted [$($unrouted:ident,)*]
    ) => {
        /// Every case of the suite: a `skip` that names anything else does not compile.
        #[allow(dead_code, non_upper_case_globals)]
        mod __conformance_cases {
            $(pub(super) const $routed: () = ();)*
            $(pub(super) const $direct_only: () = ();)*
            $(pub(super) const $unrouted: () = ();)*
        }
        $(const _: () = __conformance_cases::$sd;)*
        $(const _: () = __conformance_cases::$sb;)*

        /// A test straight to the server: ignored with its reason when skipped.
        macro_rules! __conformance_direct {
            $(
                ($sd => $d($d call:tt)*) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    #[ignore = $sd_reason]
                    async fn $sd() {
                        $d($d call)*.await;
                    }
                };
            )*
            ($d case:ident => $d($d call:tt)*) => {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $d case() {
                    $d($d call)*.await;
                }
            };
        }

        $(
            __conformance_direct!($routed =>
                $crate::conformance::cases::$routed::<$adapter, $crate::conformance::Direct>());
        )*
        $(
            __conformance_direct!($direct_only =>
                $crate::conformance::cases::$direct_only::<$adapter, $crate::conformance::Direct>());
        )*
        $(
            __conformance_direct!($unrouted => $crate::conformance::cases::$unrouted::<$adapter>());
        )*

        /// The same contract through a real PgBouncer.
        mod through_pgbouncer {
            #[allow(unused_imports)]
            use super::*;

            /// A test through PgBouncer: ignored with its reason when skipped.
            macro_rules! __conformance_through_pgbouncer {
                $(
                    ($sb => $d($d call:tt)*) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        #[ignore = $sb_reason]
                        async fn $sb() {
                            $d($d call)*.await;
                        }
                    };
                )*
                ($d case:ident => $d($d call:tt)*) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $d case() {
                        $d($d call)*.await;
                    }
                };
            }

            $(
                __conformance_through_pgbouncer!($routed =>
                    $crate::conformance::cases::$routed::<
                        $adapter,
                        $crate::conformance::ThroughPgBouncer,
                    >());
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "the suite runs this case straight to the server only"]
                async fn $direct_only() {
                    $crate::conformance::cases::$direct_only::<
                        $adapter,
                        $crate::conformance::ThroughPgBouncer,
                    >()
                    .await;
                }
            )*
        }
    };
}
