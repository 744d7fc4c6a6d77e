//! deadpool-postgres over TLS with `sslmode=verify-full` (tokio-postgres-rustls, a CA made at
//! test time): rotations under load lose no request and every session is encrypted; a wrong
//! host name or an untrusted CA fails at once with the certificate error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use credswap_core::{BoxError, RotatingCredentials};
use credswap_testkit::TestPostgres;
use credswap_testkit::harness::{app_policy, error_chain, single_role};
use credswap_testkit::scenario::{RotationSetup, Strategy, Workload};
use credswap_testkit::tls::{self, SESSION_SSL_QUERY, TestCa};
use deadpool_postgres::{Pool, PoolConfig};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

fn pool_config(max_size: usize) -> PoolConfig {
    let mut config = PoolConfig::new(max_size);
    config.timeouts.wait = Some(Duration::from_secs(10));
    config.timeouts.create = Some(Duration::from_secs(10));
    config
}

fn pool(
    config: tokio_postgres::Config,
    tls: rustls::ClientConfig,
    credentials: RotatingCredentials,
    max_size: usize,
) -> (Pool, credswap_deadpool::Rotation) {
    credswap_deadpool::create_pool_from_pg_config(
        config,
        pool_config(max_size),
        MakeRustlsConnect::new(tls),
        credentials,
    )
    .expect("pool")
}

fn verify_full(pg: &TestPostgres) -> rustls::ClientConfig {
    pg.tls().expect("a TLS cluster").client_config()
}

/// `SELECT current_user, ssl` of the session: an unencrypted session fails the request.
struct Encrypted {
    pool: Pool,
    roles: Vec<String>,
}

#[async_trait]
impl Workload for Encrypted {
    async fn request(&self) -> Result<(), BoxError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(SESSION_SSL_QUERY).await?;
        let row = client.query_one(&statement, &[]).await?;
        let (user, ssl): (String, bool) = (row.get(0), row.get(1));
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
        let credentials = RotatingCredentials::new(setup.store().clone(), app_policy(strategy))
            .await
            .expect("provider");
        let (pool, rotation) = pool(
            pg.tls_base_config(),
            verify_full(&pg),
            credentials,
            config.pool_max_size,
        );
        let workload = Arc::new(Encrypted {
            pool,
            roles: setup.roles().to_vec(),
        });
        let run = tls::run_encrypted(&pg, setup, workload, &config)
            .await
            .expect("scenario");
        tls::assert_encrypted_run("deadpool", &run, &rotation.stats());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_wrong_host_name_at_once() {
    let pg = tls::postgres().await;
    let (role, password, _store, credentials) =
        single_role(&pg, app_policy(Strategy::SingleUser)).await;

    // The server only takes this role's logins over TLS.
    let plain = pg.config_for(&role, &password).connect(NoTls).await;
    let Err(err) = plain else {
        panic!("a plaintext login must be refused");
    };
    assert!(
        error_chain(&err).contains("no encryption"),
        "{}",
        error_chain(&err)
    );

    // The right address, the wrong name: the certificate is for localhost and 127.0.0.1.
    let config = tls::wrong_name_config(&pg);
    let (pool, rotation) = pool(config, verify_full(&pg), credentials, 2);
    let started = Instant::now();
    let Err(err) = pool.get().await else {
        panic!("the name does not match, and a connection opened");
    };
    let expected = ["certificate", tls::WRONG_NAME];
    tls::assert_refused_at_once("deadpool", &err, started.elapsed(), &expected, &password);
    assert_eq!(pg.count_sessions(&[&role]).await.expect("sessions"), 0);
    assert_eq!(rotation.stats().opened, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_an_untrusted_ca_at_once() {
    let pg = tls::postgres().await;
    let (role, password, _store, credentials) =
        single_role(&pg, app_policy(Strategy::SingleUser)).await;
    let other = TestCa::generate("not the server's CA").expect("a CA");
    let (pool, _rotation) = pool(pg.tls_base_config(), other.client_config(), credentials, 2);
    let started = Instant::now();
    let Err(err) = pool.get().await else {
        panic!("the CA is not trusted, and a connection opened");
    };
    let expected = ["certificate", "UnknownIssuer"];
    tls::assert_refused_at_once("deadpool", &err, started.elapsed(), &expected, &password);
    assert_eq!(pg.count_sessions(&[&role]).await.expect("sessions"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validator_connects_over_verify_full() {
    let pg = tls::postgres().await;
    let (_role, _, store, _) = single_role(&pg, app_policy(Strategy::SingleUser)).await;
    let validated = RotatingCredentials::builder(store.clone())
        .policy(app_policy(Strategy::SingleUser))
        .validator(credswap_deadpool::connection_validator(
            pg.tls_base_config(),
            MakeRustlsConnect::new(verify_full(&pg)),
        ))
        .build()
        .await;
    assert!(validated.is_ok(), "{:?}", validated.err());
    // Without TLS the same check is refused: the validator above really used it.
    let plain = RotatingCredentials::builder(store)
        .policy(app_policy(Strategy::SingleUser))
        .validator(credswap_deadpool::connection_validator(
            pg.base_config(),
            NoTls,
        ))
        .build()
        .await;
    assert!(plain.is_err(), "a plaintext validation must be refused");
}
