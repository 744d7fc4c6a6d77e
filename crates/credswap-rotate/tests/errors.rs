//! Clear errors, and no password in any error or `Debug` output.

mod common;

use common::{login, world};
use credswap_rotate::{Master, Rotator, SecretValue, Step, Strategy, new_token};
use credswap_testkit::{random_password, unique_name};
use serde_json::json;

/// Asserts neither `Display` nor `Debug` of `value` contains `secret`.
fn assert_hidden(text: String, secret: &str) {
    assert!(!text.contains(secret), "a secret leaked: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_not_found() {
    let w = world().await;
    for strategy in [
        Strategy::SingleUser,
        Strategy::AlternatingUsers(Master::FromSecret),
    ] {
        let err = Rotator::new(w.client.clone(), "rotate/no-such-secret", strategy)
            .rotate()
            .await
            .unwrap_err();
        assert!(err.is_not_found() && err.is_store(), "{err:?}");
        assert_eq!(err.step(), Some(Step::CreateSecret));
        assert_eq!(err.code(), Some("ResourceNotFoundException"));
        assert!(err.to_string().contains("rotate/no-such-secret"), "{err}");
    }
    // A step on its own says the same.
    let rotator = Rotator::new(
        w.client.clone(),
        "rotate/no-such-secret",
        Strategy::SingleUser,
    );
    for step in Step::ALL {
        let err = rotator.run_step(step, &new_token()).await.unwrap_err();
        assert!(err.is_not_found(), "{step}: {err:?}");
        assert_eq!(err.step(), Some(step));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_master_secret_is_named_as_the_master() {
    let w = world().await;
    let (_, _, secret) = w.single_user().await;
    let err = Rotator::new(
        w.client.clone(),
        &secret,
        Strategy::AlternatingUsers(Master::Secret("rotate/no-such-master".into())),
    )
    .rotate()
    .await
    .unwrap_err();
    assert!(err.is_master_not_found() && err.is_not_found(), "{err:?}");
    assert_eq!(err.step(), Some(Step::SetSecret));
    let text = err.to_string();
    assert!(
        text.contains("master secret rotate/no-such-master"),
        "{text}"
    );
    // The rotated secret itself missing is not the master's.
    let err = Rotator::new(w.client.clone(), "rotate/nothing", Strategy::SingleUser)
        .rotate()
        .await
        .unwrap_err();
    assert!(err.is_not_found() && !err.is_master_not_found(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_secrets_are_named_without_their_value() {
    let w = world().await;
    let password = format!("Leak{}", random_password());
    let host = w.pg.host().to_owned();
    let cases = [
        ("not-json", format!("{password} is not JSON")),
        ("a-string", json!(password).to_string()),
        (
            "no-username",
            json!({"password": password, "host": host}).to_string(),
        ),
        (
            "no-host",
            json!({"username": "app", "password": password}).to_string(),
        ),
        (
            "array-password",
            json!({"username": "app", "password": [password], "host": host}).to_string(),
        ),
        (
            "mysql",
            json!({"engine": "mysql", "username": "app", "password": password, "host": host})
                .to_string(),
        ),
        (
            "bad-port",
            json!({"username": "app", "password": password, "host": host, "port": password})
                .to_string(),
        ),
    ];
    for (name, value) in cases {
        let secret = format!("rotate/malformed/{name}");
        w.create_secret(&secret, &value).await;
        let err = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser)
            .rotate()
            .await
            .unwrap_err();
        assert!(err.is_malformed(), "{name}: {err:?}");
        assert_eq!(err.step(), Some(Step::CreateSecret), "{name}");
        assert!(err.to_string().contains(&secret), "{name}: {err}");
        assert_hidden(format!("{err} {err:?}"), &password);
        // Nothing was stored.
        let versions = w.versions_with(&secret, "AWSPENDING").await;
        assert!(versions.is_empty(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_value_for_another_user_is_refused() {
    let w = world().await;
    let (role, _, secret) = w.single_user().await;
    let token = new_token();
    let other_password = random_password();
    w.client
        .put_secret_value()
        .secret_id(&secret)
        .client_request_token(&token)
        .secret_string(w.secret_json("postgres", &other_password).to_string())
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    let rotator = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser);
    let err = rotator.set_secret(&token).await.unwrap_err();
    assert!(err.is_malformed(), "{err:?}");
    assert!(err.to_string().contains(&role), "{err}");
    assert_hidden(format!("{err} {err:?}"), &other_password);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_appears_in_errors_or_debug() {
    let w = world().await;
    // A secret whose password the database refuses.
    let role = unique_name("app");
    let real = random_password();
    w.pg.create_login_role(&role, &real).await.unwrap();
    let wrong = random_password();
    let secret = format!("rotate/{role}");
    w.create_secret(&secret, &w.secret_json(&role, &wrong).to_string())
        .await;
    let rotator = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser);
    let err = rotator.rotate().await.unwrap_err();
    assert!(err.is_auth_failure() && err.is_database(), "{err:?}");
    assert_eq!(err.step(), Some(Step::SetSecret));
    assert_eq!(err.username(), Some(role.as_str()));
    assert_eq!(err.code(), Some("28P01"));
    let (_, pending_password) = login(&w.value(&secret, "AWSPENDING").await);
    for secret in [&real, &wrong, &pending_password] {
        assert_hidden(format!("{err} {err:?}"), secret);
    }

    // testSecret with a pending password the database does not know.
    let token = err_token(&w, &secret).await;
    let err = rotator.test_secret(&token).await.unwrap_err();
    assert!(err.is_auth_failure(), "{err:?}");
    assert_hidden(format!("{err} {err:?}"), &pending_password);

    // Debug of the rotator (with a master password), of a report and of a parsed secret.
    let master_password = random_password();
    let with_master = Rotator::new(
        w.client.clone(),
        &secret,
        Strategy::AlternatingUsers(Master::Login {
            username: "admin".into(),
            password: master_password.clone().into(),
        }),
    );
    assert_hidden(format!("{with_master:?}"), &master_password);
    let parsed = SecretValue::parse(&w.secret_json(&role, &real).to_string(), "test").unwrap();
    assert_hidden(format!("{parsed:?}"), &real);

    w.pg.set_password(&role, &wrong).await.unwrap();
    // The failed rotation's pending version never reached the database: take it over.
    let report = rotator.clone().takeover(true).rotate().await.unwrap();
    let (_, new_password) = login(&w.value(&secret, "AWSCURRENT").await);
    assert_hidden(format!("{report:?}"), &new_password);
    assert_hidden(format!("{report:?}"), &wrong);
}

/// The token of the version holding AWSPENDING.
async fn err_token(w: &common::World, secret: &str) -> String {
    w.versions_with(secret, "AWSPENDING").await.remove(0)
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rotation_logs_no_password() {
    let w = world().await;
    let (role, old_password, secret) = w.single_user().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("credswap_rotate=trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let report = {
        let _guard = tracing::subscriber::set_default(subscriber);
        Rotator::new(w.client.clone(), &secret, Strategy::SingleUser)
            .rotate()
            .await
            .unwrap()
    };
    let (_, new_password) = login(&w.value(&secret, "AWSCURRENT").await);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains(&report.token) && logs.contains(&role),
        "{logs}"
    );
    assert_hidden(logs.clone(), &old_password);
    assert_hidden(logs, &new_password);
}
