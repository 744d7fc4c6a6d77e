// The conformance suite for one sqlx version: `include!`d by `tests/conformance.rs` into a
// module where `adapter` names `credswap_sqlx::v0_X`, `sqlx` that version's sqlx, `NAME` the
// adapter's name and `statements` makes a `&str` of SQL executable.
//
// Two ways to check out: `plain` is `PgPool::acquire`, what unchanged application code does;
// `following` is `Rotation::acquire`, the checkout that follows the credential through
// refused logins. Each has every case of the suite; those its path is not meant to pass (or
// that the other path runs) are ignored through `skip`, with the reason (run them with
// `--ignored` to see them fail).

use credswap_core::contract::Rotation;
use credswap_core::contract::limits::SessionLimits;
use credswap_core::{BoxError, RotatingCredentials, Validate};
use credswap_testkit::TestPostgres;
use credswap_testkit::conformance::{Adapter, Session, TlsConnect, Whoami};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode, Postgres};

use adapter::PoolExt;

fn build_pool(
    pg: &TestPostgres,
    credentials: RotatingCredentials,
    max_size: usize,
) -> Result<(PgPool, Rotation), BoxError> {
    let base = crate::support::base_options!(sqlx, pg);
    build_pool_with(base, credentials, max_size)
}

fn build_pool_with(
    options: PgConnectOptions,
    credentials: RotatingCredentials,
    max_size: usize,
) -> Result<(PgPool, Rotation), BoxError> {
    let pool_options = PgPoolOptions::new()
        .max_connections(max_size as u32)
        .acquire_timeout(std::time::Duration::from_secs(10));
    Ok(adapter::connect_lazy_with(pool_options, options, credentials)?)
}

fn build_pool_limited(
    pg: &TestPostgres,
    credentials: RotatingCredentials,
    max_size: usize,
    limits: SessionLimits,
) -> Result<(PgPool, Rotation), BoxError> {
    let pool_options = PgPoolOptions::new()
        .max_connections(max_size as u32)
        .acquire_timeout(std::time::Duration::from_secs(10));
    let mut builder = adapter::Builder::new(crate::support::base_options!(sqlx, pg), credentials)
        .pool_options(pool_options);
    if let Some(age) = limits.session_age() {
        builder = builder.max_session_age(age);
    }
    if let Some(pace) = limits.connects_per_second() {
        builder = builder.max_connects_per_second(pace);
    }
    Ok(builder.build()?)
}

/// The TLS cluster's port and database under `tls`'s host: `sslmode=verify-full` trusting its
/// one CA, or `sslmode=disable`; no user and no password.
fn tls_options(pg: &TestPostgres, tls: &TlsConnect) -> PgConnectOptions {
    let options = PgConnectOptions::new_without_pgpass()
        .host(tls.host())
        .port(pg.port())
        .database(pg.database());
    match tls.ca_cert_pem() {
        Some(pem) => options
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert_from_pem(pem.as_bytes().to_vec()),
        None => options.ssl_mode(PgSslMode::Disable),
    }
}

fn build_outside_runtime(credentials: RotatingCredentials) -> Result<(), BoxError> {
    let options = PgConnectOptions::new_without_pgpass().host("127.0.0.1");
    adapter::connect_lazy_with(PgPoolOptions::new(), options, credentials)?;
    Ok(())
}

async fn printed(
    credentials: RotatingCredentials,
    secret: &str,
) -> Result<Vec<(&'static str, String)>, BoxError> {
    let options = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .database("postgres")
        .password(secret);
    let builder = adapter::Builder::new(options, credentials).pool_options(PgPoolOptions::new());
    let builder_debug = format!("{builder:?}");
    let (pool, rotation) = builder.build()?;
    let printed = vec![
        ("the builder", builder_debug),
        ("the pool", format!("{pool:?}")),
        ("the Rotation", format!("{rotation:?}")),
    ];
    pool.close().await;
    Ok(printed)
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

        async fn build_limited(
            pg: &TestPostgres,
            credentials: RotatingCredentials,
            max_size: usize,
            limits: SessionLimits,
        ) -> Result<(PgPool, Rotation), BoxError> {
            build_pool_limited(pg, credentials, max_size, limits)
        }

        async fn build_tls(
            pg: &TestPostgres,
            tls: &TlsConnect,
            credentials: RotatingCredentials,
            max_size: usize,
        ) -> Result<(PgPool, Rotation), BoxError> {
            build_pool_with(tls_options(pg, tls), credentials, max_size)
        }

        async fn checkout(pool: &PgPool) -> Result<Box<dyn Session>, BoxError> {
            Ok(Box::new(Checkout(pool.acquire().await?)))
        }

        fn validator(pg: &TestPostgres) -> Box<dyn Validate> {
            Box::new(adapter::connection_validator(crate::support::base_options!(sqlx, pg)))
        }

        fn validator_tls(pg: &TestPostgres, tls: &TlsConnect) -> Box<dyn Validate> {
            Box::new(adapter::connection_validator(tls_options(pg, tls)))
        }

        fn size(pool: &PgPool) -> usize {
            pool.size() as usize
        }

        fn build_outside_runtime(credentials: RotatingCredentials) -> Result<(), BoxError> {
            build_outside_runtime(credentials)
        }

        async fn printed(
            credentials: RotatingCredentials,
            secret: &str,
        ) -> Result<Vec<(&'static str, String)>, BoxError> {
            printed(credentials, secret).await
        }
    }

    credswap_testkit::conformance_suite!(Sqlx,
        skip {
            auth_failure_at_connect_waits_for_the_new_credential => 
                "sqlx has no connect hook (launchbadge/sqlx#3117): a login the database refuses \
                 inside PgPool::acquire reaches the caller before any adapter code runs \
                 (`following`, through PoolExt::acquire_following, runs this case)",
            the_pending_credential_bridges_a_single_user_rotation => 
                "sqlx has no connect hook (launchbadge/sqlx#3117): a login the database refuses \
                 inside PgPool::acquire reaches the caller before any adapter code runs \
                 (`following`, through PoolExt::acquire_following, runs this case)",
            persistent_wrong_password_fails_clearly_without_the_secret => 
                "sqlx has no connect hook (launchbadge/sqlx#3117): a login the database refuses \
                 inside PgPool::acquire reaches the caller before any adapter code runs \
                 (`following`, through PoolExt::acquire_following, runs this case)",
            nothing_prints_the_password => 
                "sqlx has no connect hook (launchbadge/sqlx#3117): a login the database refuses \
                 inside PgPool::acquire reaches the caller before any adapter code runs \
                 (`following`, through PoolExt::acquire_following, runs this case)",
            a_vault_lease_revoked_from_outside_is_replaced =>
                "plain sqlx returns a refused login to the caller before any adapter code runs, \
                 so nothing tells the Vault source its lease is gone until the next refresh \
                 (`following` runs this case)",
            minted_tokens_refresh_under_load_without_closing_a_session =>
                "the suite's token gate refuses the previous token the moment it installs the \
                 next (RDS keeps every unexpired token valid), and sqlx has no connect hook \
                 (launchbadge/sqlx#3117): a connect that read the options in the milliseconds \
                 before they take the new token reaches the caller refused (one in 44 000 \
                 requests did through PgBouncer); `following` runs this case",
            rotations_every_200ms_under_128_workers_stay_within_the_pool =>
                "sqlx has no connect hook (launchbadge/sqlx#3117): with a single-user rotation \
                 every 200 ms and 128 waiting checkouts, logins the database refuses inside \
                 PgPool::acquire reach the callers before any adapter code runs \
                 (`following`, through PoolExt::acquire_following, runs this case)",
            a_password_replaced_before_the_store_is_read_keeps_the_pool_serving =>
                "sqlx has no connect hook (launchbadge/sqlx#3117): a checkout that finds no idle \
                 connection while the pool is below its size (the canary's place) connects by \
                 itself, and the refusal reaches the caller before any adapter code runs \
                 (`following`, through PoolExt::acquire_following, retries on the idle \
                 connections and runs this case)",
            a_rotation_reverted_while_the_pool_moves_is_followed_back =>
                "sqlx has no connect hook (launchbadge/sqlx#3117): a slot refilled after the \
                 revert opens with the pending password, and the database's refusal reaches \
                 the caller before any adapter code runs, until the next refresh reads the \
                 store (`following`, through PoolExt::acquire_following, runs this case)",
            dropping_the_pool_stops_every_task =>
                "sqlx has no weak pool handle: the watcher holds the pool until PgPool::close",
            a_pg_hba_rejection_fails_fast_as_a_configuration_error =>
                "sqlx connects with sslmode=prefer by default, so the TLS-only server of this \
                 case accepts it and there is no pg_hba rejection to classify (the \
                 classification is credswap_core::contract::Failure::classify_message, which \
                 the sqlx adapter uses)",
            verify_full_refuses_a_wrong_host_name_at_once =>
                "sqlx's PgConnectOptions has no hostaddr: it cannot reach the server's address \
                 under a name the certificate is not for",
        },
        skip through_pgbouncer {
            a_full_pool_moves_to_the_pending_credential_before_the_store_finishes =>
                "plain sqlx returns a refused login to the caller: behind PgBouncer, a slot \
                 refilled while a pending trial proves the new login (the current login is \
                 tried first) can connect with the password setSecret has just replaced (one \
                 full run failed so)",
        },
    );
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

        async fn build_limited(
            pg: &TestPostgres,
            credentials: RotatingCredentials,
            max_size: usize,
            limits: SessionLimits,
        ) -> Result<(Following, Rotation), BoxError> {
            let (pool, rotation) = build_pool_limited(pg, credentials, max_size, limits)?;
            let following = Following {
                pool,
                rotation: rotation.clone(),
            };
            Ok((following, rotation))
        }

        async fn build_tls(
            pg: &TestPostgres,
            tls: &TlsConnect,
            credentials: RotatingCredentials,
            max_size: usize,
        ) -> Result<(Following, Rotation), BoxError> {
            let (pool, rotation) = build_pool_with(tls_options(pg, tls), credentials, max_size)?;
            let following = Following {
                pool,
                rotation: rotation.clone(),
            };
            Ok((following, rotation))
        }

        async fn checkout(pool: &Following) -> Result<Box<dyn Session>, BoxError> {
            Ok(Box::new(Checkout(pool.pool.acquire_following(&pool.rotation).await?)))
        }

        fn validator(pg: &TestPostgres) -> Box<dyn Validate> {
            Box::new(adapter::connection_validator(crate::support::base_options!(sqlx, pg)))
        }

        fn validator_tls(pg: &TestPostgres, tls: &TlsConnect) -> Box<dyn Validate> {
            Box::new(adapter::connection_validator(tls_options(pg, tls)))
        }

        fn size(pool: &Following) -> usize {
            pool.pool.size() as usize
        }

        fn build_outside_runtime(credentials: RotatingCredentials) -> Result<(), BoxError> {
            build_outside_runtime(credentials)
        }

        async fn printed(
            credentials: RotatingCredentials,
            secret: &str,
        ) -> Result<Vec<(&'static str, String)>, BoxError> {
            printed(credentials, secret).await
        }
    }

    credswap_testkit::conformance_suite!(SqlxFollowing,
        skip {
            dropping_the_pool_stops_every_task =>
                "sqlx has no weak pool handle: the watcher holds the pool until PgPool::close",
            a_pg_hba_rejection_fails_fast_as_a_configuration_error =>
                "sqlx connects with sslmode=prefer by default, so the TLS-only server of this \
                 case accepts it and there is no pg_hba rejection to classify",
            verify_full_refuses_a_wrong_host_name_at_once =>
                "sqlx's PgConnectOptions has no hostaddr: it cannot reach the server's address \
                 under a name the certificate is not for",
        },
        skip direct {
            alternating_users_rotation_loses_no_request => "the same pool as `plain`, which runs this case: `following` runs the cases where \
             the checkout after a refused login differs",
            idle_stale_connections_close_after_a_change => "the same pool as `plain`, which runs this case: `following` runs the cases where \
             the checkout after a refused login differs",
            busy_connection_commits_across_rotation_then_closes_on_return => "the same pool as `plain`, which runs this case: `following` runs the cases where \
             the checkout after a refused login differs",
            never_more_connections_than_max_size => "the same pool as `plain`, which runs this case: `following` runs the cases where \
             the checkout after a refused login differs",
            validate_before_swap_keeps_the_working_credential => "the same pool as `plain`, which runs this case: `following` runs the cases where \
             the checkout after a refused login differs",
            leased_credential_connections_retire_before_expiry => "the same pool as `plain`, which runs this case: `following` runs the cases where \
             the checkout after a refused login differs",
            a_server_restart_fails_only_requests_in_flight => "the same pool as `plain`, which runs this case: `following` runs the cases where \
             the checkout after a refused login differs",
            a_full_pool_moves_to_the_pending_credential_before_the_store_finishes => "the same pool as `plain`, which runs this case: `following` runs the cases where \
             the checkout after a refused login differs",
        },
        skip through_pgbouncer {
            alternating_users_rotation_loses_no_request => "through PgBouncer, `following` runs only the refused-login cases (PgBouncer refuses \
             a login with 08P01), where its checkout differs from `plain`'s",
            single_user_rotation_loses_no_request => "through PgBouncer, `following` runs only the refused-login cases (PgBouncer refuses \
             a login with 08P01), where its checkout differs from `plain`'s",
            idle_stale_connections_close_after_a_change => "through PgBouncer, `following` runs only the refused-login cases (PgBouncer refuses \
             a login with 08P01), where its checkout differs from `plain`'s",
            busy_connection_commits_across_rotation_then_closes_on_return => "through PgBouncer, `following` runs only the refused-login cases (PgBouncer refuses \
             a login with 08P01), where its checkout differs from `plain`'s",
            never_more_connections_than_max_size => "through PgBouncer, `following` runs only the refused-login cases (PgBouncer refuses \
             a login with 08P01), where its checkout differs from `plain`'s",
            a_full_pool_moves_to_the_pending_credential_before_the_store_finishes => "through PgBouncer, `following` runs only the refused-login cases (PgBouncer refuses \
             a login with 08P01), where its checkout differs from `plain`'s",
            leased_credential_connections_retire_before_expiry => "through PgBouncer, `following` runs only the refused-login cases (PgBouncer refuses \
             a login with 08P01), where its checkout differs from `plain`'s",
            a_stuck_pending_version_fails_nothing_and_stops_being_tried => "through PgBouncer, `following` runs only the refused-login cases (PgBouncer refuses \
             a login with 08P01), where its checkout differs from `plain`'s",
            a_reverted_rotation_is_followed_back_without_a_restart => "through PgBouncer, `following` runs only the refused-login cases (PgBouncer refuses \
             a login with 08P01), where its checkout differs from `plain`'s",
            a_pending_version_moved_mid_trial_is_never_published_unproven => "through PgBouncer, `following` runs only the refused-login cases (PgBouncer refuses \
             a login with 08P01), where its checkout differs from `plain`'s",
            a_black_holed_store_bounds_every_checkout => "through PgBouncer, `following` runs only the refused-login cases (PgBouncer refuses \
             a login with 08P01), where its checkout differs from `plain`'s",
            a_throttling_store_fails_no_request => "through PgBouncer, `following` runs only the refused-login cases (PgBouncer refuses \
             a login with 08P01), where its checkout differs from `plain`'s",
            a_vault_lease_revoked_from_outside_is_replaced => "through PgBouncer, `following` runs only the refused-login cases (PgBouncer refuses \
             a login with 08P01), where its checkout differs from `plain`'s",
        },
    );
}
