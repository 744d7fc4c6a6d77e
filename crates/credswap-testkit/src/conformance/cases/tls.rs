//! TLS: a pool on a cluster that takes the application's logins only over TLS
//! ([`tls::postgres`]), with `sslmode=verify-full`, loses no request through rotations and
//! every session is encrypted; a certificate it must not trust fails a connect at once with the
//! certificate error; the server refuses a login without TLS; the validator uses the pool's TLS
//! settings.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use credswap_core::{BoxError, RotatingCredentials};

use super::super::{Adapter, TlsConnect};
use super::helpers::build_tls;
use crate::harness::{app_policy, error_chain, single_role};
use crate::scenario::{RotationSetup, Strategy, Workload};
use crate::tls::{self, ClusterTls, TestCa};

/// Fails the request on a session that is not encrypted (`pg_stat_ssl` of its own backend).
const FAIL_UNLESS_ENCRYPTED: &str = "DO $$ BEGIN \
     IF NOT (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) THEN \
     RAISE EXCEPTION 'the session is not encrypted'; \
     END IF; END $$";

fn cluster_tls(pg: &crate::TestPostgres) -> &ClusterTls {
    pg.tls().expect("a TLS cluster")
}

/// A request through the pool that fails on an unencrypted session or another role's.
struct Encrypted<A: Adapter> {
    pool: A::Pool,
    roles: Vec<String>,
}

#[async_trait]
impl<A: Adapter> Workload for Encrypted<A> {
    async fn request(&self) -> Result<(), BoxError> {
        let mut session = A::checkout(&self.pool).await?;
        session.execute(FAIL_UNLESS_ENCRYPTED).await?;
        let me = session.whoami().await?;
        if !self.roles.contains(&me.user) {
            return Err(format!("the session runs as {}", me.user).into());
        }
        Ok(())
    }
}

/// Both strategies, a few seconds each with a rotation every second, over `verify-full`: no
/// request fails, every session is encrypted (each request checks its own, and `pg_stat_ssl` is
/// sampled from the server's side), and the pool follows every rotation
/// ([`tls::assert_encrypted_run`]).
pub async fn rotations_over_verify_full_lose_no_request<A: Adapter>() {
    let pg = tls::postgres().await;
    let config = tls::scenario_config();
    let connect = TlsConnect::verify_full(cluster_tls(&pg));
    for strategy in Strategy::ALL {
        let setup = RotationSetup::create(&pg, strategy).await.expect("roles");
        let credentials = RotatingCredentials::new(setup.store().clone(), app_policy(strategy))
            .await
            .expect("provider");
        let (pool, rotation) =
            build_tls::<A>(&pg, &connect, credentials, config.pool_max_size).await;
        let workload = Arc::new(Encrypted::<A> {
            pool,
            roles: setup.roles().to_vec(),
        });
        let run = tls::run_encrypted(&pg, setup, workload, &config)
            .await
            .expect("scenario");
        tls::assert_encrypted_run(A::NAME, &run, &rotation.stats());
    }
}

/// Opens one connection that the client's TLS check must refuse: the connect's error comes at
/// once, names every one of `expected` and never the password; no session opened.
async fn refused_at_once<A: Adapter>(
    connect: impl FnOnce(&ClusterTls) -> TlsConnect,
    expected: &[&str],
) {
    let pg = tls::postgres().await;
    let connect = connect(cluster_tls(&pg));
    let (role, password, _store, credentials) =
        single_role(&pg, app_policy(Strategy::SingleUser)).await;
    let (pool, rotation) = build_tls::<A>(&pg, &connect, credentials, 2).await;
    let started = Instant::now();
    let Err(err) = A::connect(&pool).await else {
        panic!(
            "{}: {connect:?} must be refused, and a connection opened",
            A::NAME
        );
    };
    tls::assert_refused_at_once(A::NAME, &*err, started.elapsed(), expected, &password);
    assert_eq!(pg.count_sessions(&[&role]).await.expect("sessions"), 0);
    assert_eq!(rotation.stats().opened, 0, "{:?}", rotation.stats());
}

/// The right address under a name the certificate is not for ([`tls::WRONG_NAME`]; it is for
/// `localhost` and `127.0.0.1`): refused at once with the certificate error.
pub async fn verify_full_refuses_a_wrong_host_name_at_once<A: Adapter>() {
    refused_at_once::<A>(TlsConnect::wrong_name, &["certificate", tls::WRONG_NAME]).await;
}

/// A CA that did not sign the server's certificate: refused at once with `UnknownIssuer`.
pub async fn verify_full_refuses_an_untrusted_ca_at_once<A: Adapter>() {
    let other = TestCa::generate("not the server's CA").expect("a CA");
    refused_at_once::<A>(|_| TlsConnect::trusting(&other), &["UnknownIssuer"]).await;
}

/// The cluster takes the application's logins only over TLS: a pool without TLS is refused by
/// `pg_hba.conf` ("no encryption"), and the error says so.
pub async fn the_server_refuses_a_login_without_tls<A: Adapter>() {
    let pg = tls::postgres().await;
    let (role, password, _store, credentials) =
        single_role(&pg, app_policy(Strategy::SingleUser)).await;
    let (pool, _rotation) = build_tls::<A>(&pg, &TlsConnect::plaintext(), credentials, 2).await;
    let Err(err) = A::connect(&pool).await else {
        panic!("{}: a login without TLS must be refused", A::NAME);
    };
    let text = error_chain(&*err);
    eprintln!("{}: {text}", A::NAME);
    assert!(text.contains("no encryption"), "{text}");
    assert!(!text.contains(&password), "{text}");
    assert_eq!(pg.count_sessions(&[&role]).await.expect("sessions"), 0);
}

/// The validator connects with the TLS settings it is given: over `verify-full` trusting the
/// cluster it accepts the credential; trusting another CA, or without TLS, it cannot.
pub async fn the_validator_connects_over_verify_full<A: Adapter>() {
    let pg = tls::postgres().await;
    let (_role, _, store, _) = single_role(&pg, app_policy(Strategy::SingleUser)).await;
    let validated = |connect: TlsConnect| {
        let store = store.clone();
        let validator = A::validator_tls(&pg, &connect);
        async move {
            RotatingCredentials::builder(store)
                .policy(app_policy(Strategy::SingleUser))
                .validator(validator)
                .build()
                .await
                .map(drop)
        }
    };
    let trusted = validated(TlsConnect::verify_full(cluster_tls(&pg))).await;
    assert!(trusted.is_ok(), "{}: {:?}", A::NAME, trusted.err());
    let other = TestCa::generate("not the server's CA").expect("a CA");
    let untrusted = validated(TlsConnect::trusting(&other)).await;
    assert!(
        untrusted.is_err(),
        "{}: a validation against an untrusted CA must fail",
        A::NAME
    );
    let plain = validated(TlsConnect::plaintext()).await;
    assert!(
        plain.is_err(),
        "{}: a validation without TLS must be refused",
        A::NAME
    );
}
