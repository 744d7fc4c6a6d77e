//! bb8 over TLS with `sslmode=verify-full` (tokio-postgres-rustls, a CA made at test time):
//! rotations under load lose no request and every session is encrypted; a wrong host name or an
//! untrusted CA fails at once with the certificate error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use credswap_bb8::{Builder, RotatingConnectionManager, Rotation};
use credswap_core::{BoxError, RotatingCredentials};
use credswap_testkit::TestPostgres;
use credswap_testkit::harness::{app_policy, error_chain, single_role};
use credswap_testkit::scenario::{RotationSetup, Strategy, Workload};
use credswap_testkit::tls::{self, SESSION_SSL_QUERY, TestCa};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

type Pool = bb8::Pool<RotatingConnectionManager<MakeRustlsConnect>>;

fn verify_full(pg: &TestPostgres) -> MakeRustlsConnect {
    MakeRustlsConnect::new(pg.tls().expect("a TLS cluster").client_config())
}

/// `SELECT current_user, ssl` of the session: an unencrypted session fails the request.
struct Encrypted {
    pool: Pool,
    roles: Vec<String>,
}

#[async_trait]
impl Workload for Encrypted {
    async fn request(&self) -> Result<(), BoxError> {
        let conn = self.pool.get().await?;
        let row = conn.query_one(SESSION_SSL_QUERY, &[]).await?;
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
        let (pool, rotation): (Pool, Rotation) =
            Builder::new(pg.tls_base_config(), verify_full(&pg), credentials)
                .max_size(u32::try_from(config.pool_max_size).expect("a small pool"))
                .connection_timeout(Duration::from_secs(10))
                .build()
                .await
                .expect("pool");
        let workload = Arc::new(Encrypted {
            pool,
            roles: setup.roles().to_vec(),
        });
        let run = tls::run_encrypted(&pg, setup, workload, &config)
            .await
            .expect("scenario");
        tls::assert_encrypted_run("bb8", &run, &rotation.stats());
    }
}

/// Builds a pool that opens one connection before it returns and does not retry a failed
/// connect, so a refused handshake comes back from `build` with the adapter's error.
async fn build_eagerly(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    credentials: RotatingCredentials,
) -> (Result<(Pool, Rotation), credswap_bb8::Error>, Duration) {
    let started = Instant::now();
    let built = Builder::new(config, tls, credentials)
        .pool_builder(
            bb8::Pool::builder()
                .min_idle(Some(1))
                .retry_connection(false),
        )
        .max_size(2)
        .connection_timeout(Duration::from_secs(10))
        .build()
        .await;
    (built, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_wrong_host_name_at_once() {
    let pg = tls::postgres().await;
    let (role, password, _store, credentials) =
        single_role(&pg, app_policy(Strategy::SingleUser)).await;
    // The right address, the wrong name: the certificate is for localhost and 127.0.0.1.
    let config = tls::wrong_name_config(&pg);
    let (built, took) = build_eagerly(config, verify_full(&pg), credentials).await;
    let Err(err) = built else {
        panic!("the name does not match, and the pool was built");
    };
    let expected = ["certificate", tls::WRONG_NAME];
    let text = tls::assert_refused_at_once("bb8", &err, took, &expected, &password);
    assert!(!err.is_auth_failure(), "{text}");
    assert_eq!(pg.count_sessions(&[&role]).await.expect("sessions"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_an_untrusted_ca_at_once() {
    let pg = tls::postgres().await;
    let (role, password, _store, credentials) =
        single_role(&pg, app_policy(Strategy::SingleUser)).await;
    let other = TestCa::generate("not the server's CA").expect("a CA");
    let (built, took) = build_eagerly(
        pg.tls_base_config(),
        MakeRustlsConnect::new(other.client_config()),
        credentials.clone(),
    )
    .await;
    let Err(err) = built else {
        panic!("the CA is not trusted, and the pool was built");
    };
    let expected = ["certificate", "UnknownIssuer"];
    tls::assert_refused_at_once("bb8", &err, took, &expected, &password);

    // A lazily built pool: `get` can only time out (bb8 reports no connect error), within
    // its connection timeout rather than hanging; the connector's error is what
    // `dedicated_connection` returns.
    let (pool, _rotation): (Pool, Rotation) = Builder::new(
        pg.tls_base_config(),
        MakeRustlsConnect::new(other.client_config()),
        credentials,
    )
    .max_size(2)
    .connection_timeout(Duration::from_secs(2))
    .build()
    .await
    .expect("a lazy pool");
    let started = Instant::now();
    assert!(pool.get().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(4));
    let Err(err) = pool.dedicated_connection().await else {
        panic!("the CA is not trusted, and a connection opened");
    };
    assert!(error_chain(&err).contains("UnknownIssuer"), "{err}");
    assert_eq!(pg.count_sessions(&[&role]).await.expect("sessions"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validator_connects_over_verify_full() {
    let pg = tls::postgres().await;
    let (_role, _, store, _) = single_role(&pg, app_policy(Strategy::SingleUser)).await;
    let validated = RotatingCredentials::builder(store.clone())
        .policy(app_policy(Strategy::SingleUser))
        .validator(credswap_bb8::connection_validator(
            pg.tls_base_config(),
            verify_full(&pg),
        ))
        .build()
        .await;
    assert!(validated.is_ok(), "{:?}", validated.err());
    // Without TLS the same check is refused: the validator above really used it.
    let plain = RotatingCredentials::builder(store)
        .policy(app_policy(Strategy::SingleUser))
        .validator(credswap_bb8::connection_validator(pg.base_config(), NoTls))
        .build()
        .await;
    assert!(plain.is_err(), "a plaintext validation must be refused");
}
