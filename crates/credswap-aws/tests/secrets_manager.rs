//! `SecretsManagerSource` against a real moto server (`pip install 'moto[server]'`), with the
//! test kit's fault proxy for throttling, 5xx and outages.

use std::time::Duration;

use credswap_aws::aws_sdk_secretsmanager::config::retry::RetryConfig;
use credswap_aws::aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use credswap_aws::aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use credswap_aws::aws_sdk_secretsmanager::primitives::Blob;
use credswap_aws::aws_sdk_secretsmanager::{Client, Config};
use credswap_aws::{SecretsManagerSource, Stats};
use credswap_core::secrecy::ExposeSecret;
use credswap_core::{CredentialSource, Policy, RotatingCredentials, SourceError};
use credswap_testkit::{Fault, FaultProxy, TestMoto};

const PW: &str = "pw-0f1e2d3c-never-printed";
const PW2: &str = "pw-9a8b7c6d-never-printed";

async fn moto() -> TestMoto {
    TestMoto::start()
        .await
        .unwrap_or_else(|e| panic!("starting moto_server failed: {e}"))
}

/// moto with the secret "db" (`PW`), an admin client, a fault proxy in front of moto, and a
/// source through it (no SDK retries) that has read the secret once.
async fn behind_a_proxy() -> (TestMoto, Client, FaultProxy, SecretsManagerSource) {
    let moto = moto().await;
    let admin = client(&moto.endpoint_url(), 1);
    create(&admin, "db", &json("app", PW)).await;
    let proxy = moto.faulty().await.unwrap();
    let source = source(client(&proxy.endpoint_url(), 1), "db");
    source.fetch().await.unwrap();
    (moto, admin, proxy, source)
}

/// A client for `endpoint` with moto's region and dummy credentials; `attempts` = 1 disables
/// the SDK's retries, and backoff is short so retried tests stay fast.
fn client(endpoint: &str, attempts: u32) -> Client {
    let conf = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(TestMoto::REGION))
        .credentials_provider(Credentials::new(
            TestMoto::ACCESS_KEY_ID,
            TestMoto::SECRET_ACCESS_KEY,
            None,
            None,
            "credswap-test",
        ))
        .endpoint_url(endpoint)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(attempts)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .build();
    Client::from_conf(conf)
}

fn source(client: Client, secret: &str) -> SecretsManagerSource {
    SecretsManagerSource::builder(secret)
        .client(client)
        .build()
        .unwrap()
}

fn json(username: &str, password: &str) -> String {
    format!(
        r#"{{"engine":"postgres","host":"db.internal","port":5432,"dbname":"orders","username":"{username}","password":"{password}"}}"#
    )
}

/// Creates a secret; returns its first version id.
async fn create(admin: &Client, name: &str, value: &str) -> String {
    admin
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_owned()
}

/// A new `AWSCURRENT` version (what the end of a rotation leaves); returns its id.
async fn put_current(admin: &Client, name: &str, value: &str) -> String {
    put_version(admin, name, value, None).await
}

/// createSecret: a new version staged `AWSPENDING` only; returns its id.
async fn put_pending(admin: &Client, name: &str, value: &str) -> String {
    put_version(admin, name, value, Some("AWSPENDING")).await
}

/// A new version, staged `stage` (`AWSCURRENT` without one); returns its id.
async fn put_version(admin: &Client, name: &str, value: &str, stage: Option<&str>) -> String {
    admin
        .put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .set_version_stages(stage.map(|s| vec![s.to_owned()]))
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_owned()
}

/// finishSecret: `AWSCURRENT` moves from version `from` to version `to` (moto keeps
/// `AWSPENDING` on `to` until it is removed, as AWS's templates do).
async fn finish(admin: &Client, name: &str, to: &str, from: &str) {
    admin
        .update_secret_version_stage()
        .secret_id(name)
        .version_stage("AWSCURRENT")
        .move_to_version_id(to)
        .remove_from_version_id(from)
        .send()
        .await
        .unwrap();
}

/// Puts the `AWSPENDING` label on `version` (`staged`) or takes it off.
async fn label_pending(admin: &Client, name: &str, version: &str, staged: bool) {
    let update = admin
        .update_secret_version_stage()
        .secret_id(name)
        .version_stage("AWSPENDING");
    let update = if staged {
        update.move_to_version_id(version)
    } else {
        update.remove_from_version_id(version)
    };
    update.send().await.unwrap();
}

/// Asserts that nothing printable holds a password.
fn assert_no_password(printed: &str) {
    for pw in [PW, PW2] {
        assert!(!printed.contains(pw), "a password was printed: {printed}");
    }
}

fn assert_malformed(err: &SourceError, field: &str) {
    assert!(err.is_malformed(), "{err:?}");
    assert!(err.message().contains(field), "{field} not named: {err}");
    assert_no_password(&format!("{err} {err:?} {err:#?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_json_secret_and_refreshes_with_describe_only() {
    let moto = moto().await;
    let admin = client(&moto.endpoint_url(), 1);
    let v1 = create(&admin, "app/db", &json("app", PW)).await;
    let source = source(client(&moto.endpoint_url(), 1), "app/db");

    let secret = source.fetch_secret().await.unwrap();
    let c = secret.credential();
    assert_eq!(c.username(), "app");
    assert_eq!(c.password().expose_secret(), PW);
    assert_eq!(c.version(), Some(v1.as_str()));
    assert!(c.issued_at().is_some(), "CreatedDate becomes issued_at");
    let d = secret.details();
    assert_eq!(
        (d.engine(), d.host(), d.port(), d.dbname()),
        (
            Some("postgres"),
            Some("db.internal"),
            Some(5432),
            Some("orders")
        )
    );
    assert_eq!(source.details().as_ref(), Some(d));
    let s = source.stats();
    assert_eq!((s.describe_calls, s.get_calls, s.cache_hits), (1, 1, 0));

    // Unchanged: DescribeSecret only.
    for _ in 0..3 {
        let again = source.fetch().await.unwrap();
        assert!(again.is_same_login(c));
        assert_eq!(again.version(), Some(v1.as_str()));
    }
    let s = source.stats();
    assert_eq!((s.describe_calls, s.get_calls, s.cache_hits), (4, 1, 3));

    // A new AWSCURRENT version is read.
    let v2 = put_current(&admin, "app/db", &json("app", PW2)).await;
    let c2 = source.fetch().await.unwrap();
    assert_eq!(c2.password().expose_secret(), PW2);
    assert_eq!(c2.version(), Some(v2.as_str()));
    let s = source.stats();
    assert_eq!((s.describe_calls, s.get_calls, s.cache_hits), (5, 2, 3));

    let printed = format!("{source:?} {source:#?} {secret:?} {c:?} {c2:#?}");
    assert_no_password(&printed);
    assert!(printed.contains("app/db"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_string_secret_needs_the_username() {
    let moto = moto().await;
    let admin = client(&moto.endpoint_url(), 1);
    create(&admin, "plain", PW).await;

    let with_user = SecretsManagerSource::builder("plain")
        .client(client(&moto.endpoint_url(), 1))
        .username("app_user")
        .build()
        .unwrap();
    let c = with_user.fetch().await.unwrap();
    assert_eq!(c.username(), "app_user");
    assert_eq!(c.password().expose_secret(), PW);
    assert_eq!(with_user.details().unwrap().host(), None);

    let without = source(client(&moto.endpoint_url(), 1), "plain");
    let err = without.fetch().await.unwrap_err();
    assert_malformed(&err, "username");
    assert_no_password(&format!("{without:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_version_is_offered_until_the_rotation_finishes() {
    let moto = moto().await;
    let admin = client(&moto.endpoint_url(), 1);
    let current = create(&admin, "rot", &json("app", PW)).await;
    let source = source(client(&moto.endpoint_url(), 1), "rot");
    assert!(source.fetch_pending().await.unwrap().is_none());

    // createSecret: AWSPENDING.
    let pending = put_pending(&admin, "rot", &json("app", PW2)).await;
    // As a provider asks: its refresh's fetch, then the pending credential.
    let c = source.fetch().await.unwrap();
    assert_eq!(c.password().expose_secret(), PW, "AWSCURRENT is unchanged");
    let p = source
        .fetch_pending()
        .await
        .unwrap()
        .expect("a pending version");
    assert_eq!(p.password().expose_secret(), PW2);
    assert_eq!(p.version(), Some(pending.as_str()));
    assert_no_password(&format!("{p:?} {source:?}"));

    // finishSecret: AWSCURRENT moves; moto keeps AWSPENDING until removed, as AWS's templates do.
    finish(&admin, "rot", &pending, &current).await;
    assert!(
        source.fetch_pending().await.unwrap().is_none(),
        "a version that is AWSCURRENT too is not pending"
    );
    label_pending(&admin, "rot", &pending, false).await;
    assert!(source.fetch_pending().await.unwrap().is_none());
    let c = source.fetch().await.unwrap();
    assert_eq!(c.password().expose_secret(), PW2);
    assert_eq!(c.version(), Some(pending.as_str()));
}

/// What a provider's refreshes cost the store over one rotation: a refresh mid-rotation (a fetch,
/// then the pending fetch the provider makes after it) costs one `DescribeSecret`; finishSecret
/// costs no `GetSecretValue` when the version now current was read as `AWSPENDING` before. A
/// fleet's calls at a rotation are these times the instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_costs_each_refresh_one_describe_and_the_pending_value_once() {
    let moto = moto().await;
    let admin = client(&moto.endpoint_url(), 1);
    let current = create(&admin, "fleet", &json("app", PW)).await;
    let refreshing = source(client(&moto.endpoint_url(), 1), "fleet");
    refreshing.fetch().await.unwrap();
    let calls = |s: Stats| (s.describe_calls, s.get_calls);
    assert_eq!(calls(refreshing.stats()), (1, 1));

    let pending = put_pending(&admin, "fleet", &json("app", PW2)).await;
    // A refresh mid-rotation: the fetch's DescribeSecret answers the pending fetch too.
    assert_eq!(
        refreshing.fetch().await.unwrap().password().expose_secret(),
        PW
    );
    assert!(refreshing.rotation_pending());
    let p = refreshing.fetch_pending().await.unwrap().expect("pending");
    assert_eq!(p.password().expose_secret(), PW2);
    assert_eq!(
        calls(refreshing.stats()),
        (2, 2),
        "one DescribeSecret, one read of AWSPENDING"
    );
    // The next refresh: the pending value is cached.
    refreshing.fetch().await.unwrap();
    assert!(refreshing.fetch_pending().await.unwrap().is_some());
    assert_eq!(calls(refreshing.stats()), (3, 2));
    // The answer serves one pending fetch only: a second one asks the store again.
    assert!(refreshing.fetch_pending().await.unwrap().is_some());
    assert_eq!(calls(refreshing.stats()), (4, 2));
    // The pending fetch after a refused login, when the last fetch saw no rotation, asks
    // the store: it may have staged a version since.
    let fresh = source(client(&moto.endpoint_url(), 1), "fleet");
    label_pending(&admin, "fleet", &pending, false).await;
    fresh.fetch().await.unwrap();
    assert!(!fresh.rotation_pending());
    label_pending(&admin, "fleet", &pending, true).await;
    assert!(
        fresh.fetch_pending().await.unwrap().is_some(),
        "staged after the fetch"
    );
    assert_eq!(calls(fresh.stats()), (2, 2));

    // finishSecret: the version now current is the pending one read before.
    finish(&admin, "fleet", &pending, &current).await;
    let c = refreshing.fetch().await.unwrap();
    assert_eq!(c.password().expose_secret(), PW2);
    assert_eq!(c.version(), Some(pending.as_str()));
    assert_eq!(
        calls(refreshing.stats()),
        (5, 2),
        "no GetSecretValue for a version read already"
    );
    assert_eq!(
        refreshing.details().map(|d| d.host().map(str::to_owned)),
        Some(Some("db.internal".to_owned()))
    );
    assert!(refreshing.fetch_pending().await.unwrap().is_none());
    assert!(!refreshing.rotation_pending());
    assert_no_password(&format!("{refreshing:?} {c:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_secrets_name_the_field_and_never_the_value() {
    let moto = moto().await;
    let admin = client(&moto.endpoint_url(), 1);
    let cases = [
        (
            "bad-json",
            format!(r#"{{"username":"app","password":"{PW}""#),
            "JSON",
        ),
        (
            "no-password",
            format!(r#"{{"username":"app","pw":"{PW}"}}"#),
            "\"password\"",
        ),
        (
            "wrong-type",
            r#"{"username":"app","password":7654321}"#.to_owned(),
            "\"password\"",
        ),
        (
            "mysql",
            format!(r#"{{"engine":"mysql","username":"app","password":"{PW}"}}"#),
            "\"engine\"",
        ),
        (
            "no-username",
            format!(r#"{{"password":"{PW}"}}"#),
            "\"username\"",
        ),
    ];
    for (name, value, field) in &cases {
        create(&admin, name, value).await;
        let source = source(client(&moto.endpoint_url(), 1), name);
        let err = source.fetch().await.unwrap_err();
        assert_malformed(&err, field);
        assert!(!err.to_string().contains("7654321"), "{err}");
        assert!(err.message().contains(name), "the secret is named: {err}");
        assert_no_password(&format!("{source:?}"));
    }

    admin
        .create_secret()
        .name("binary")
        .secret_binary(Blob::new(PW.as_bytes()))
        .send()
        .await
        .unwrap();
    let err = source(client(&moto.endpoint_url(), 1), "binary")
        .fetch()
        .await
        .unwrap_err();
    assert_malformed(&err, "SecretBinary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_neither_unavailable_nor_malformed() {
    let moto = moto().await;
    let source = source(client(&moto.endpoint_url(), 1), "nope");
    let err = source.fetch().await.unwrap_err();
    assert!(
        !err.is_unavailable() && !err.is_malformed() && !err.is_denied(),
        "{err:?}"
    );
    assert!(err.message().contains("ResourceNotFoundException"), "{err}");
    assert!(err.message().contains("\"nope\""), "{err}");
    assert!(source.fetch_pending().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_unavailable() {
    let (_moto, _admin, proxy, source) = behind_a_proxy().await;

    proxy.inject_next(Fault::Throttle, 1);
    let err = source.fetch().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.message().contains("ThrottlingException"), "{err}");
    assert!(err.message().contains("Rate exceeded"), "{err}");

    proxy.inject_next(Fault::InternalError, 1);
    let err = source.fetch().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.message().contains("InternalServiceError"), "{err}");
    assert!(err.message().contains("HTTP 500"), "{err}");

    // Healed: the same kept-alive connections work again, and the cache still counts.
    assert_eq!(source.fetch().await.unwrap().password().expose_secret(), PW);
    let stats = proxy.stats();
    assert_eq!((stats.throttled, stats.internal_errors), (1, 1));
    assert!(
        stats.connections < stats.forwarded + 2,
        "the SDK keeps its connections alive through the proxy: {stats:?}"
    );
    assert_eq!(source.stats().get_calls, 1);

    // With the SDK's retries, one throttled answer is invisible.
    let retrying = source_with_retries(&proxy.endpoint_url());
    proxy.inject_next(Fault::Throttle, 1);
    assert!(retrying.fetch().await.is_ok());
    assert_eq!(proxy.stats().throttled, 2);
    // Until the throttling outlasts them.
    proxy.inject_until_heal(Fault::Throttle);
    assert!(retrying.fetch().await.unwrap_err().is_unavailable());
    proxy.heal().await;
    assert!(retrying.fetch().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_whose_read_failed_is_retried_with_the_read_alone() {
    let (_moto, admin, proxy, source) = behind_a_proxy().await;
    let calls = |s: Stats| (s.describe_calls, s.get_calls);
    assert_eq!(calls(source.stats()), (1, 1));

    // A rotation: DescribeSecret sees the new version, GetSecretValue is throttled.
    let v2 = put_current(&admin, "db", &json("app", PW2)).await;
    proxy.inject_after(1, Fault::Throttle, 1);
    assert!(source.fetch().await.unwrap_err().is_unavailable());
    assert_eq!(calls(source.stats()), (2, 2));
    // The retry reads it with one call.
    let c = source.fetch().await.unwrap();
    assert_eq!(c.password().expose_secret(), PW2);
    assert_eq!(c.version(), Some(v2.as_str()));
    assert_eq!(calls(source.stats()), (2, 3));
    // Then DescribeSecret again, and the version read is cached.
    source.fetch().await.unwrap();
    assert_eq!(calls(source.stats()), (3, 3));

    // Retries that fail keep to one call each; one that comes after the version moved again
    // reads the version current then.
    put_current(&admin, "db", &json("app", PW)).await;
    proxy.inject_after(1, Fault::Throttle, 1);
    assert!(source.fetch().await.unwrap_err().is_unavailable());
    proxy.inject_next(Fault::Throttle, 1);
    assert!(source.fetch().await.unwrap_err().is_unavailable());
    assert_eq!(calls(source.stats()), (4, 5));
    let v4 = put_current(&admin, "db", &json("app", "pw-third-never-printed")).await;
    let c = source.fetch().await.unwrap();
    assert_eq!(c.version(), Some(v4.as_str()));
    assert_eq!(c.password().expose_secret(), "pw-third-never-printed");
    assert_eq!(calls(source.stats()), (4, 6));

    // A failed DescribeSecret leaves nothing to reuse: the next fetch asks it again.
    proxy.inject_next(Fault::Throttle, 1);
    assert!(source.fetch().await.unwrap_err().is_unavailable());
    source.fetch().await.unwrap();
    assert_eq!(calls(source.stats()), (6, 6));
    assert_eq!(proxy.stats().throttled, 4);

    // A pending fetch's own DescribeSecret is newer than the one a failed read left: the next
    // fetch asks again. And a pending version it finds says the store is rotating.
    let v5 = put_current(&admin, "db", &json("app", PW2)).await;
    proxy.inject_after(1, Fault::Throttle, 1);
    assert!(source.fetch().await.unwrap_err().is_unavailable());
    assert_eq!(calls(source.stats()), (7, 7));
    put_pending(&admin, "db", &json("app", PW)).await;
    assert!(
        !source.rotation_pending(),
        "the failed fetch saw no rotation"
    );
    let pending = source
        .fetch_pending()
        .await
        .unwrap()
        .expect("a pending version");
    assert_eq!(pending.password().expose_secret(), PW);
    assert!(source.rotation_pending());
    assert_eq!(calls(source.stats()), (8, 8));
    let c = source.fetch().await.unwrap();
    assert_eq!(c.version(), Some(v5.as_str()));
    assert_eq!(calls(source.stats()), (9, 9));
    assert!(source.rotation_pending());
}

fn source_with_retries(endpoint: &str) -> SecretsManagerSource {
    source(client(endpoint, 3), "db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_and_unreachable_endpoints_are_unavailable() {
    let (moto, _admin, proxy, source) = behind_a_proxy().await;

    proxy.outage().await;
    let err = source.fetch().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let err = source.fetch().await.unwrap_err();
    assert!(err.is_unavailable(), "new connections are refused: {err:?}");
    proxy.heal().await;
    assert!(
        source.fetch().await.is_ok(),
        "listening again after the outage"
    );

    // Nothing listens on the port of a stopped moto.
    let mut stopped = TestMoto::start().await.unwrap();
    let url = stopped.endpoint_url();
    stopped.stop();
    let err = SecretsManagerSource::builder("db")
        .client(client(&moto.endpoint_url(), 1))
        .endpoint_url(url)
        .build()
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );

    // A server that accepts and never answers: the SDK's operation timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let conf = client(&url, 1)
        .config()
        .to_builder()
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_millis(300))
                .build(),
        )
        .build();
    let err = SecretsManagerSource::builder("db")
        .client(Client::from_conf(conf))
        .build()
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.message().contains("timed out"), "{err}");
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_rules_become_the_credential_schedule() {
    let moto = moto().await;
    let admin = client(&moto.endpoint_url(), 1);
    create(&admin, "scheduled", &json("app", PW)).await;
    // moto has no Lambda: RotateSecret fails on the (nonexistent) function, but it records the
    // rules first (moto 5.x), which is all this test needs.
    let _ = admin
        .rotate_secret()
        .secret_id("scheduled")
        .rotation_lambda_arn("arn:aws:lambda:us-east-1:123456789012:function:none")
        .rotation_rules(
            credswap_aws::aws_sdk_secretsmanager::types::RotationRulesType::builder()
                .automatically_after_days(7)
                .build(),
        )
        .rotate_immediately(false)
        .send()
        .await;
    let described = admin
        .describe_secret()
        .secret_id("scheduled")
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.rotation_enabled(),
        Some(true),
        "this moto did not record the rotation rules of a RotateSecret without a Lambda (moto \
         5.2.5 does: scripts/test installs it)"
    );
    let c = source(client(&moto.endpoint_url(), 1), "scheduled")
        .fetch()
        .await
        .unwrap();
    assert_eq!(c.password().expose_secret(), PW, "AWSCURRENT is unchanged");
    assert_eq!(
        c.rotation_interval(),
        Some(Duration::from_secs(7 * 24 * 3600))
    );
    assert!(c.next_rotation_at().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_credentials_pick_up_a_rotation() {
    let moto = moto().await;
    let admin = client(&moto.endpoint_url(), 1);
    create(&admin, "prod/db", &json("app", PW)).await;
    let source = std::sync::Arc::new(source(client(&moto.endpoint_url(), 1), "prod/db"));
    let policy = Policy::builder()
        .refresh_interval(Duration::from_secs(60))
        .overlap_window(Duration::from_secs(3600))
        .build()
        .unwrap();
    let credentials = RotatingCredentials::new(source.clone(), policy)
        .await
        .unwrap();
    let first = credentials.current();
    assert_eq!(first.credential().password().expose_secret(), PW);

    credentials.refresh().await.unwrap();
    assert_eq!(credentials.current().generation(), first.generation());
    assert!(source.stats().cache_hits >= 1);

    let v2 = put_current(&admin, "prod/db", &json("app", PW2)).await;
    let mut changes = credentials.subscribe();
    credentials.refresh().await.unwrap();
    let now = credentials.current();
    assert_eq!(now.credential().password().expose_secret(), PW2);
    assert_eq!(now.credential().version(), Some(v2.as_str()));
    assert!(now.generation() > first.generation());
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .unwrap()
        .unwrap();
    assert_no_password(&format!("{credentials:?} {source:?}"));
}
