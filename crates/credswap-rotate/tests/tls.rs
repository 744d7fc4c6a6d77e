//! A single-user rotation through `Database::tls` (tokio-postgres-rustls, verify-full against a
//! CA made at test time) on a cluster that takes the role's logins only over TLS, with a real
//! moto as the store.

use aws_sdk_secretsmanager::Client;
use std::time::{Duration, Instant};

use credswap_rotate::{Database, Outcome, Rotator, SslMode, Step, Strategy};
use credswap_testkit::harness::error_chain;
use credswap_testkit::tls::TestCa;
use credswap_testkit::{TestMoto, TestPostgres, random_password, unique_name};
use serde_json::{Value, json};
use tokio_postgres_rustls::MakeRustlsConnect;

struct World {
    pg: TestPostgres,
    _moto: TestMoto,
    client: Client,
}

async fn world(pg: TestPostgres) -> World {
    let moto = TestMoto::start().await.expect("moto starts");
    let config = moto.sdk_config().await;
    World {
        pg,
        client: Client::new(&config),
        _moto: moto,
    }
}

impl World {
    /// A login role and an RDS-style secret for it whose host is `host`; returns (role,
    /// password, secret name).
    async fn single_user(&self, host: &str) -> (String, String, String) {
        let role = unique_name("tls");
        let password = random_password();
        self.pg
            .create_login_role(&role, &password)
            .await
            .expect("role");
        let name = format!("rotate/{role}");
        let secret = json!({
            "engine": "postgres",
            "host": host,
            "port": self.pg.port(),
            "dbname": self.pg.database(),
            "username": role,
            "password": password,
        });
        self.client
            .create_secret()
            .name(&name)
            .secret_string(secret.to_string())
            .send()
            .await
            .expect("CreateSecret");
        (role, password, name)
    }

    /// The version id carrying AWSPENDING.
    async fn pending(&self, secret: &str) -> String {
        self.client
            .describe_secret()
            .secret_id(secret)
            .send()
            .await
            .expect("DescribeSecret")
            .version_ids_to_stages
            .unwrap_or_default()
            .into_iter()
            .find(|(_, stages)| stages.iter().any(|s| s == "AWSPENDING"))
            .expect("a pending version")
            .0
    }

    async fn current(&self, secret: &str) -> Value {
        let out = self
            .client
            .get_secret_value()
            .secret_id(secret)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .expect("GetSecretValue");
        serde_json::from_str(out.secret_string().expect("a string")).expect("JSON")
    }

    /// Whether `user`/`password` logs in over TLS (verify-full), and whether that session is
    /// encrypted by `pg_stat_ssl`.
    async fn logs_in(&self, user: &str, password: &str) -> Option<bool> {
        let mut config = self.pg.tls_base_config();
        config.user(user).password(password);
        let tls = MakeRustlsConnect::new(self.pg.tls().expect("TLS").client_config());
        let (client, connection) = config.connect(tls).await.ok()?;
        let task = tokio::spawn(connection);
        let ssl: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_ssl")
            .get(0);
        drop(client);
        let _ = task.await;
        Some(ssl)
    }
}

fn verify_full(ca: &rustls::ClientConfig) -> Database {
    Database::tls(MakeRustlsConnect::new(ca.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_user_rotation_runs_over_verify_full() {
    let w = world(TestPostgres::start_tls().await.expect("a TLS cluster")).await;
    let tls = w.pg.tls().expect("TLS").clone();
    // The secret names the host the certificate is for.
    let (role, old_password, secret) = w.single_user(tls.server_name()).await;

    let report = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser)
        .database(verify_full(&tls.client_config()))
        .rotate()
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(
        report
            .steps
            .iter()
            .map(|s| (s.step, s.outcome))
            .collect::<Vec<_>>(),
        Step::ALL.map(|s| (s, Outcome::Done)).to_vec()
    );
    let current = w.current(&secret).await;
    let new_password = current["password"].as_str().expect("a password");
    assert_eq!(current["username"], role.as_str());
    assert_ne!(new_password, old_password);
    assert_eq!(w.logs_in(&role, new_password).await, Some(true));
    assert_eq!(w.logs_in(&role, &old_password).await, None);

    // The same rotation without TLS is refused by the server (no pg_hba entry without
    // encryption): the connection above really used TLS.
    let err = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser)
        .database(Database::no_tls())
        .rotate()
        .await
        .expect_err("a plaintext login is refused");
    let text = error_chain(&err);
    assert!(text.contains("no encryption"), "{text}");
    assert!(!text.contains(new_password), "{text}");
    assert_eq!(w.logs_in(&role, new_password).await, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_ca_fails_the_rotation_before_any_change() {
    let w = world(TestPostgres::start_tls().await.expect("a TLS cluster")).await;
    let tls = w.pg.tls().expect("TLS").clone();
    let (role, old_password, secret) = w.single_user(tls.server_name()).await;
    let other = TestCa::generate("not the server's CA").expect("a CA");

    let err = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser)
        .database(verify_full(&other.client_config()))
        .rotate()
        .await
        .expect_err("the CA is not trusted");
    let text = error_chain(&err);
    assert!(err.is_database(), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    // Nothing changed in the database: the old password still logs in.
    assert_eq!(w.logs_in(&role, &old_password).await, Some(true));
}

/// tokio-postgres connects with `sslmode=prefer` unless told otherwise; `Database::tls`
/// requires TLS, so a server (or anything in between) that declines it gets no plaintext
/// rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connector_refuses_a_server_without_tls() {
    let w = world(TestPostgres::start().await.expect("a plain cluster")).await;
    let (_role, _, secret) = w.single_user(w.pg.host()).await;
    let ca = TestCa::generate("any CA").expect("a CA");
    let rotated = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser)
        .database(verify_full(&ca.client_config()))
        .rotate()
        .await;
    assert!(
        rotated.is_err(),
        "a TLS connector rotated through a server without TLS"
    );
}

/// libpq's sslmode through `Database::rustls`: verify-full with the cluster's CA file rotates
/// (on a cluster that turns every plaintext login of the role away), `require` without a CA
/// encrypts without verifying, a CA file of another CA fails before any change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_with_a_ca_file_rotate_over_tls() {
    let w = world(TestPostgres::start_tls().await.expect("a TLS cluster")).await;
    let tls = w.pg.tls().expect("TLS").clone();
    let (role, _, secret) = w.single_user(tls.server_name()).await;
    let ca_file = tls.ca_cert_path().to_owned();

    for (mode, ca) in [
        (SslMode::VerifyFull, Some(ca_file.as_path())),
        (SslMode::VerifyCa, Some(ca_file.as_path())),
        (SslMode::Require, None),
        (SslMode::Prefer, None),
    ] {
        let database = Database::rustls(mode, ca).expect("a database");
        let before = w.current(&secret).await["password"].clone();
        let report = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser)
            .database(database)
            .rotate()
            .await
            .unwrap_or_else(|e| panic!("{mode}: {}", error_chain(&e)));
        assert_eq!(report.steps[3].outcome, Outcome::Done, "{mode}");
        let current = w.current(&secret).await;
        let new_password = current["password"].as_str().expect("a password");
        assert_ne!(current["password"], before, "{mode}");
        assert_eq!(w.logs_in(&role, new_password).await, Some(true), "{mode}");
    }

    // Another CA's certificate in the CA file: the handshake fails, nothing changes.
    let other = TestCa::generate("not the server's CA").expect("a CA");
    let other_file = std::env::temp_dir().join(format!("{}.pem", unique_name("other-ca")));
    std::fs::write(&other_file, other.cert_pem()).expect("write the CA file");
    let password = w.current(&secret).await["password"]
        .as_str()
        .expect("a password")
        .to_owned();
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa, SslMode::Require] {
        let err = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser)
            .database(Database::rustls(mode, Some(&other_file)).expect("a database"))
            .rotate_with_token(&credswap_rotate::new_token())
            .await;
        // The failed rotation leaves its pending version: take it over on the next try.
        let err = err.expect_err("the CA is not the server's");
        assert!(
            err.is_database() && !err.is_auth_failure(),
            "{mode}: {err:?}"
        );
        assert!(error_chain(&err).contains("UnknownIssuer"), "{mode}: {err}");
        assert_eq!(w.logs_in(&role, &password).await, Some(true), "{mode}");
        let pending = w.pending(&secret).await;
        w.client
            .update_secret_version_stage()
            .secret_id(&secret)
            .version_stage("AWSPENDING")
            .remove_from_version_id(pending)
            .send()
            .await
            .expect("UpdateSecretVersionStage");
    }
    let _ = std::fs::remove_file(&other_file);

    // Bad configurations are refused before anything is tried.
    for (mode, ca) in [
        (SslMode::VerifyFull, None),
        (SslMode::VerifyCa, None),
        (SslMode::Disable, Some(ca_file.as_path())),
    ] {
        let err = Database::rustls(mode, ca).expect_err("a bad combination");
        assert!(err.is_config(), "{mode}: {err:?}");
    }
}

/// A plaintext login on a cluster whose pg_hba.conf turns it away (as `rds.force_ssl` does)
/// is a configuration error, reported at once: not a refused password (the rotator does not go
/// on to try AWSPREVIOUS), and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_hba_rejection_fails_fast_as_a_configuration_error() {
    let w = world(TestPostgres::start_tls().await.expect("a TLS cluster")).await;
    let tls = w.pg.tls().expect("TLS").clone();
    let (role, password, secret) = w.single_user(tls.server_name()).await;

    for strategy in [
        Strategy::SingleUser,
        Strategy::AlternatingUsers(credswap_rotate::Master::Login {
            username: "nobody".into(),
            password: "not-used".to_owned().into(),
        }),
    ] {
        let began = Instant::now();
        let err = Rotator::new(w.client.clone(), &secret, strategy.clone())
            .database(Database::rustls(SslMode::Disable, None).expect("a database"))
            .takeover(true)
            .rotate()
            .await
            .expect_err("pg_hba.conf rejects plaintext");
        let took = began.elapsed();
        let text = error_chain(&err);
        assert!(err.is_connection_rejected() && err.is_database(), "{text}");
        assert!(!err.is_auth_failure(), "{text}");
        assert_eq!(err.code(), Some("28000"), "{text}");
        // setSecret's first login: the pending user (`<role>_clone` for alternating users).
        assert!(
            err.username().is_some_and(|r| r.starts_with(&role)),
            "{text}"
        );
        assert_eq!(err.step(), Some(Step::SetSecret), "{text}");
        assert!(text.contains("pg_hba.conf"), "{text}");
        assert!(text.contains(&role), "{text}");
        assert!(!text.contains(&password), "{text}");
        assert!(took < Duration::from_secs(3), "{strategy:?}: took {took:?}");
        assert_eq!(w.logs_in(&role, &password).await, Some(true));
    }
    // The same rotation over TLS goes through.
    Rotator::new(w.client.clone(), &secret, Strategy::SingleUser)
        .database(
            Database::rustls(SslMode::VerifyFull, Some(tls.ca_cert_path())).expect("a database"),
        )
        .takeover(true)
        .rotate()
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(w.logs_in(&role, &password).await, None);
}
