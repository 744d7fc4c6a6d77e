//! sqlx over TLS with `sslmode=verify-full` (sqlx's rustls, a CA made at test time), once per
//! enabled sqlx version: rotations under load lose no request and every session is encrypted
//! (the pool's connects, the adapter's probes and its validator keep the base options' TLS
//! settings); an untrusted CA fails at once with the certificate error, and the server refuses
//! a login without TLS.

/// The tests for one sqlx version: `$adapter` is `credswap_sqlx::v0_X`, `$sqlx` that version's
/// sqlx.
macro_rules! tls_tests {
    ($adapter:path, $sqlx:ident, $name:literal) => {
        use std::sync::Arc;
        use std::time::{Duration, Instant};

        use adapter::RotationExt;
        use async_trait::async_trait;
        use credswap_core::contract::Rotation;
        use credswap_core::{BoxError, RotatingCredentials};
        use credswap_testkit::TestPostgres;
        use credswap_testkit::harness::{app_policy, error_chain, single_role};
        use credswap_testkit::scenario::{RotationSetup, Strategy, Workload};
        use credswap_testkit::tls::{self, SESSION_SSL_QUERY, TestCa};
        use $adapter as adapter;
        use $sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

        /// Host (the certificate's name), port and database, `sslmode=verify-full` with
        /// `root_pem` as the only trusted CA; no user and no password.
        fn verify_full(pg: &TestPostgres, root_pem: &str) -> PgConnectOptions {
            let tls = pg.tls().expect("a TLS cluster");
            PgConnectOptions::new_without_pgpass()
                .host(tls.server_name())
                .port(pg.port())
                .database(pg.database())
                .ssl_mode(PgSslMode::VerifyFull)
                .ssl_root_cert_from_pem(root_pem.as_bytes().to_vec())
        }

        fn trusting_the_cluster(pg: &TestPostgres) -> PgConnectOptions {
            verify_full(pg, pg.tls().expect("a TLS cluster").ca_cert_pem())
        }

        fn pool(
            options: PgConnectOptions,
            credentials: RotatingCredentials,
            max_size: usize,
        ) -> (PgPool, Rotation) {
            let pool_options = PgPoolOptions::new()
                .max_connections(u32::try_from(max_size).expect("a small pool"))
                .acquire_timeout(Duration::from_secs(10));
            adapter::connect_lazy_with(pool_options, options, credentials).expect("pool")
        }

        /// `SELECT current_user, ssl` of the session, checked out through
        /// `Rotation::acquire`: an unencrypted session fails the request.
        struct Encrypted {
            pool: PgPool,
            rotation: Rotation,
            roles: Vec<String>,
        }

        #[async_trait]
        impl Workload for Encrypted {
            async fn request(&self) -> Result<(), BoxError> {
                let mut conn = self.rotation.acquire(&self.pool).await?;
                let (user, ssl): (String, bool) = $sqlx::query_as(SESSION_SSL_QUERY)
                    .fetch_one(&mut *conn)
                    .await?;
                if !ssl {
                    return Err(format!("the session of {user} is not encrypted").into());
                }
                if !self.roles.contains(&user) {
                    return Err(format!("the session runs as {user}").into());
                }
                Ok(())
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rotations_over_verify_full_lose_no_request() {
            let pg = tls::postgres().await;
            let config = tls::scenario_config();
            for strategy in Strategy::ALL {
                let setup = RotationSetup::create(&pg, strategy).await.expect("roles");
                let credentials =
                    RotatingCredentials::new(setup.store().clone(), app_policy(strategy))
                        .await
                        .expect("provider");
                let (pool, rotation) =
                    pool(trusting_the_cluster(&pg), credentials, config.pool_max_size);
                let workload = Arc::new(Encrypted {
                    pool: pool.clone(),
                    rotation: rotation.clone(),
                    roles: setup.roles().to_vec(),
                });
                let run = tls::run_encrypted(&pg, setup, workload, &config)
                    .await
                    .expect("scenario");
                pool.close().await;
                tls::assert_encrypted_run($name, &run, &rotation.stats());
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn verify_full_refuses_an_untrusted_ca_at_once() {
            let pg = tls::postgres().await;
            let (role, password, _store, credentials) =
                single_role(&pg, app_policy(Strategy::SingleUser)).await;
            let other = TestCa::generate("not the server's CA").expect("a CA");
            let (pool, rotation) = pool(verify_full(&pg, other.cert_pem()), credentials, 2);
            for following in [false, true] {
                let started = Instant::now();
                let err = if following {
                    rotation.acquire(&pool).await.err()
                } else {
                    pool.acquire().await.err()
                }
                .expect("the CA is not trusted");
                tls::assert_refused_at_once(
                    &format!("{} (following: {following})", $name),
                    &err,
                    started.elapsed(),
                    &["UnknownIssuer"],
                    &password,
                );
            }
            pool.close().await;
            assert_eq!(pg.count_sessions(&[&role]).await.expect("sessions"), 0);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_server_refuses_a_login_without_tls() {
            let pg = tls::postgres().await;
            let (_role, _, _store, credentials) =
                single_role(&pg, app_policy(Strategy::SingleUser)).await;
            let plain = trusting_the_cluster(&pg).ssl_mode(PgSslMode::Disable);
            let (pool, _rotation) = pool(plain, credentials, 2);
            let err = pool
                .acquire()
                .await
                .err()
                .expect("no pg_hba entry without TLS");
            let text = error_chain(&err);
            assert!(text.contains("no encryption"), "{text}");
            pool.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_validator_connects_over_verify_full() {
            let pg = tls::postgres().await;
            let (_role, _, store, _) = single_role(&pg, app_policy(Strategy::SingleUser)).await;
            let validated = RotatingCredentials::builder(store.clone())
                .policy(app_policy(Strategy::SingleUser))
                .validator(adapter::connection_validator(trusting_the_cluster(&pg)))
                .build()
                .await;
            assert!(validated.is_ok(), "{:?}", validated.err());
            let untrusted = TestCa::generate("not the server's CA").expect("a CA");
            let refused = RotatingCredentials::builder(store)
                .policy(app_policy(Strategy::SingleUser))
                .validator(adapter::connection_validator(verify_full(
                    &pg,
                    untrusted.cert_pem(),
                )))
                .build()
                .await;
            assert!(
                refused.is_err(),
                "a validation against an untrusted CA must fail"
            );
        }
    };
}

#[cfg(feature = "sqlx-0_8")]
mod sqlx_0_8 {
    tls_tests!(credswap_sqlx::v0_8, sqlx, "sqlx 0.8");
}

#[cfg(feature = "sqlx-0_9")]
mod sqlx_0_9 {
    tls_tests!(credswap_sqlx::v0_9, sqlx09, "sqlx 0.9");
}
