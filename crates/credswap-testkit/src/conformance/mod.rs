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

pub mod cases;
mod misbehaving;
mod rejected;
mod store;

use async_trait::async_trait;
use credswap_core::contract::Rotation;
use credswap_core::{BoxError, RotatingCredentials, Validate};

use crate::TestPostgres;
use crate::harness::{self, TestServer};

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

    /// Checks a connection out through the pool's plain API.
    async fn checkout(pool: &Self::Pool) -> Result<Box<dyn Session>, BoxError>;

    /// The adapter's validate-before-swap check (open one connection with the candidate
    /// credential) for `pg`.
    fn validator(pg: &TestPostgres) -> Box<dyn Validate>;

    /// The pool's own count of its connections (idle and busy).
    fn size(pool: &Self::Pool) -> usize;

    /// Checks out, asks who the session is, and returns the connection.
    async fn whoami(pool: &Self::Pool) -> Result<Whoami, BoxError> {
        let mut session = Self::checkout(pool).await?;
        session.whoami().await
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
/// [`Adapter`]).
#[macro_export]
macro_rules! conformance_suite {
    ($adapter:ty) => {
        $crate::conformance_suite!(@cases $adapter, $crate::conformance::Direct;
            alternating_users_rotation_loses_no_request,
            single_user_rotation_loses_no_request,
            idle_stale_connections_close_after_a_change,
            busy_connection_commits_across_rotation_then_closes_on_return,
            never_more_connections_than_max_size,
            auth_failure_at_connect_waits_for_the_new_credential,
            the_pending_credential_bridges_a_single_user_rotation,
            a_full_pool_moves_to_the_pending_credential_before_the_store_finishes,
            persistent_wrong_password_fails_clearly_without_the_secret,
            validate_before_swap_keeps_the_working_credential,
            a_mistyped_secret_keeps_the_pool_serving,
            leased_credential_connections_retire_before_expiry,
            dropping_the_pool_stops_every_task,
            nothing_prints_the_password,
            a_server_restart_fails_only_requests_in_flight,
            a_stuck_pending_version_fails_nothing_and_stops_being_tried,
            a_reverted_rotation_is_followed_back_without_a_restart,
            a_pending_version_moved_mid_trial_is_never_published_unproven,
            a_black_holed_store_bounds_every_checkout,
            a_throttling_store_fails_no_request,
            a_pg_hba_rejection_fails_fast_as_a_configuration_error,
            a_stuck_awspending_on_secrets_manager_fails_nothing,
            a_reverted_rotation_on_secrets_manager_is_followed_back,
            a_vault_lease_revoked_from_outside_is_replaced,
        );

        /// The same contract through a real PgBouncer.
        mod through_pgbouncer {
            #[allow(unused_imports)]
            use super::*;

            $crate::conformance_suite!(@cases $adapter, $crate::conformance::ThroughPgBouncer;
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
                leased_credential_connections_retire_before_expiry,
                a_stuck_pending_version_fails_nothing_and_stops_being_tried,
                a_reverted_rotation_is_followed_back_without_a_restart,
                a_pending_version_moved_mid_trial_is_never_published_unproven,
                a_black_holed_store_bounds_every_checkout,
                a_throttling_store_fails_no_request,
                a_vault_lease_revoked_from_outside_is_replaced,
            );
        }
    };
    (@cases $adapter:ty, $route:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::conformance::cases::$case::<$adapter, $route>().await;
            }
        )*
    };
}
