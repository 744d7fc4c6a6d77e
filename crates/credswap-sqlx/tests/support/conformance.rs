// The conformance suite for one sqlx version: `include!`d by `tests/conformance.rs` into a
// module where `adapter` names `credswap_sqlx::v0_X`, `sqlx` that version's sqlx, `NAME` the
// adapter's name and `statements` makes a `&str` of SQL executable.
//
// Two ways to check out: `plain` is `PgPool::acquire`, what unchanged application code does;
// `following` is `Rotation::acquire`, the checkout that follows the credential through
// refused logins. Each runs the cases its path is meant to pass; the others are here too,
// ignored, with the reason (run them with `--ignored` to see them fail).

/// One ignored test per case, with the reason.
macro_rules! ignored_cases {
    ($adapter:ty, $route:ty, $reason:literal; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $reason]
            async fn $case() {
                credswap_testkit::conformance::cases::$case::<$adapter, $route>().await;
            }
        )*
    };
}

use credswap_core::contract::Rotation;
use credswap_core::{BoxError, RotatingCredentials, Validate};
use credswap_testkit::TestPostgres;
use credswap_testkit::conformance::{Adapter, Direct, Session, ThroughPgBouncer, Whoami};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, Postgres};

use adapter::RotationExt;

fn build_pool(
    pg: &TestPostgres,
    credentials: RotatingCredentials,
    max_size: usize,
) -> Result<(PgPool, Rotation), BoxError> {
    let pool_options = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_size as u32)
        .acquire_timeout(std::time::Duration::from_secs(10));
    let base = crate::support::base_options!(sqlx, pg);
    Ok(adapter::connect_lazy_with(pool_options, base, credentials)?)
}

struct Checkout(PoolConnection<Postgres>);

#[async_trait::async_trait]
impl Session for Checkout {
    async fn execute(&mut self, sql: &str) -> Result<(), BoxError> {
        sqlx::Executor::execute(&mut *self.0, statements(sql)).await?;
        Ok(())
    }

    async fn whoami(&mut self) -> Result<Whoami, BoxError> {
        let (user, pid): (String, i32) =
            sqlx::query_as("SELECT current_user::text, pg_backend_pid()")
                .fetch_one(&mut *self.0)
                .await?;
        Ok(Whoami { user, pid })
    }
}

/// Checkouts through `PgPool::acquire`.
mod plain {
    use super::*;

    pub struct Sqlx;

    #[async_trait::async_trait]
    impl Adapter for Sqlx {
        type Pool = PgPool;

        const NAME: &'static str = NAME;

        async fn build(
            pg: &TestPostgres,
            credentials: RotatingCredentials,
            max_size: usize,
        ) -> Result<(PgPool, Rotation), BoxError> {
            build_pool(pg, credentials, max_size)
        }

        async fn checkout(pool: &PgPool) -> Result<Box<dyn Session>, BoxError> {
            Ok(Box::new(Checkout(pool.acquire().await?)))
        }

        fn validator(pg: &TestPostgres) -> Box<dyn Validate> {
            Box::new(adapter::connection_validator(crate::support::base_options!(sqlx, pg)))
        }

        fn size(pool: &PgPool) -> usize {
            pool.size() as usize
        }
    }

    credswap_testkit::conformance_suite!(@cases Sqlx, Direct;
        alternating_users_rotation_loses_no_request,
        single_user_rotation_loses_no_request,
        idle_stale_connections_close_after_a_change,
        busy_connection_commits_across_rotation_then_closes_on_return,
        never_more_connections_than_max_size,
        validate_before_swap_keeps_the_working_credential,
        leased_credential_connections_retire_before_expiry,
        a_server_restart_fails_only_requests_in_flight,
        a_full_pool_moves_to_the_pending_credential_before_the_store_finishes,
        a_stuck_pending_version_fails_nothing_and_stops_being_tried,
        a_reverted_rotation_is_followed_back_without_a_restart,
        a_pending_version_moved_mid_trial_is_never_published_unproven,
        a_black_holed_store_bounds_every_checkout,
        a_throttling_store_fails_no_request,
        a_stuck_awspending_on_secrets_manager_fails_nothing,
        a_reverted_rotation_on_secrets_manager_is_followed_back,
    );

    ignored_cases!(Sqlx, Direct,
        "sqlx has no connect hook: a refused login inside PgPool::acquire reaches the caller \
         at once, and nothing reports it (`following` runs this case)";
        auth_failure_at_connect_waits_for_the_new_credential,
        the_pending_credential_bridges_a_single_user_rotation,
        persistent_wrong_password_fails_clearly_without_the_secret,
        a_mistyped_secret_keeps_the_pool_serving,
        nothing_prints_the_password,
    );

    ignored_cases!(Sqlx, Direct,
        "plain sqlx returns a refused login to the caller before any adapter code runs, so \
         nothing tells the Vault source its lease is gone until the next refresh (`following` \
         runs this case)";
        a_vault_lease_revoked_from_outside_is_replaced,
    );

    ignored_cases!(Sqlx, Direct,
        "sqlx has no weak pool handle: the watcher holds the pool until PgPool::close";
        dropping_the_pool_stops_every_task,
    );

    ignored_cases!(Sqlx, Direct,
        "sqlx connects with sslmode=prefer by default, so the TLS-only server of this case \
         accepts it and there is no pg_hba rejection to classify (the classification is \
         credswap_core::contract::Failure::classify_message, which the sqlx adapter uses)";
        a_pg_hba_rejection_fails_fast_as_a_configuration_error,
    );

    /// The same through a real PgBouncer: the adapter sends no startup parameter.
    mod through_pgbouncer {
        use super::*;

        credswap_testkit::conformance_suite!(@cases Sqlx, ThroughPgBouncer;
            alternating_users_rotation_loses_no_request,
            single_user_rotation_loses_no_request,
            idle_stale_connections_close_after_a_change,
            busy_connection_commits_across_rotation_then_closes_on_return,
            never_more_connections_than_max_size,
            leased_credential_connections_retire_before_expiry,
            a_stuck_pending_version_fails_nothing_and_stops_being_tried,
            a_reverted_rotation_is_followed_back_without_a_restart,
            a_pending_version_moved_mid_trial_is_never_published_unproven,
            a_black_holed_store_bounds_every_checkout,
            a_throttling_store_fails_no_request,
        );

        ignored_cases!(Sqlx, ThroughPgBouncer,
            "plain sqlx returns a refused login to the caller: behind PgBouncer, a slot refilled \
             while a pending trial proves the new login (the current login is tried first) can \
             connect with the password setSecret has just replaced (one full run failed so)";
            a_full_pool_moves_to_the_pending_credential_before_the_store_finishes,
        );

        ignored_cases!(Sqlx, ThroughPgBouncer,
            "plain sqlx returns a refused login to the caller before any adapter code runs, so \
             nothing tells the Vault source its lease is gone until the next refresh (`following` \
             runs this case)";
            a_vault_lease_revoked_from_outside_is_replaced,
        );
    }
}

/// Checkouts through `Rotation::acquire`.
mod following {
    use super::*;

    pub struct SqlxFollowing;

    #[derive(Clone)]
    pub struct Following {
        pool: PgPool,
        rotation: Rotation,
    }

    #[async_trait::async_trait]
    impl Adapter for SqlxFollowing {
        type Pool = Following;

        const NAME: &'static str = NAME;

        async fn build(
            pg: &TestPostgres,
            credentials: RotatingCredentials,
            max_size: usize,
        ) -> Result<(Following, Rotation), BoxError> {
            let (pool, rotation) = build_pool(pg, credentials, max_size)?;
            let following = Following {
                pool,
                rotation: rotation.clone(),
            };
            Ok((following, rotation))
        }

        async fn checkout(pool: &Following) -> Result<Box<dyn Session>, BoxError> {
            Ok(Box::new(Checkout(pool.rotation.acquire(&pool.pool).await?)))
        }

        fn validator(pg: &TestPostgres) -> Box<dyn Validate> {
            Box::new(adapter::connection_validator(crate::support::base_options!(sqlx, pg)))
        }

        fn size(pool: &Following) -> usize {
            pool.pool.size() as usize
        }
    }

    // What differs from `plain`: the checkout after a refused login.
    credswap_testkit::conformance_suite!(@cases SqlxFollowing, Direct;
        single_user_rotation_loses_no_request,
        auth_failure_at_connect_waits_for_the_new_credential,
        the_pending_credential_bridges_a_single_user_rotation,
        persistent_wrong_password_fails_clearly_without_the_secret,
        nothing_prints_the_password,
        a_stuck_awspending_on_secrets_manager_fails_nothing,
        a_reverted_rotation_on_secrets_manager_is_followed_back,
        a_vault_lease_revoked_from_outside_is_replaced,
        a_stuck_pending_version_fails_nothing_and_stops_being_tried,
        a_reverted_rotation_is_followed_back_without_a_restart,
        a_pending_version_moved_mid_trial_is_never_published_unproven,
        a_black_holed_store_bounds_every_checkout,
        a_throttling_store_fails_no_request,
    );

    ignored_cases!(SqlxFollowing, Direct,
        "sqlx has no weak pool handle: the watcher holds the pool until PgPool::close";
        dropping_the_pool_stops_every_task,
    );

    ignored_cases!(SqlxFollowing, Direct,
        "sqlx connects with sslmode=prefer by default, so the TLS-only server of this case \
         accepts it and there is no pg_hba rejection to classify";
        a_pg_hba_rejection_fails_fast_as_a_configuration_error,
    );

    ignored_cases!(SqlxFollowing, Direct,
        "prove before drain is not built for sqlx yet: its pool cannot open a connection with \
         the last accepted login while a new one is refused, so it drains on the change";
        a_mistyped_secret_keeps_the_pool_serving,
    );

    /// The same through a real PgBouncer, which refuses a login with `08P01`.
    mod through_pgbouncer {
        use super::*;

        credswap_testkit::conformance_suite!(@cases SqlxFollowing, ThroughPgBouncer;
            auth_failure_at_connect_waits_for_the_new_credential,
            the_pending_credential_bridges_a_single_user_rotation,
            persistent_wrong_password_fails_clearly_without_the_secret,
        );
    }
}
