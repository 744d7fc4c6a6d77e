//! Shared setup of the sqlx adapter's integration tests (version-independent; the cases in
//! `cases.rs` are compiled once per enabled sqlx version).
#![allow(dead_code)]

use std::time::Duration;

use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
use credswap_testkit::{TestPostgres, random_password, unique_name};

pub use credswap_testkit::harness::{app_policy, postgres};

/// The load scenarios run one at a time: 32 workers and a cluster each, on a 2-core machine,
/// would otherwise measure each other.
pub static SCENARIO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A policy that refreshes only when told to (or after an auth-failure report).
pub fn manual_policy() -> Policy {
    Policy::builder()
        .refresh_interval(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// Creates a role, a store holding its password, and a provider over the store.
pub async fn single_role(
    pg: &TestPostgres,
    policy: Policy,
) -> (String, String, MemorySource, RotatingCredentials) {
    let role = unique_name("app");
    let password = random_password();
    pg.create_login_role(&role, &password).await.unwrap();
    let store = MemorySource::new(Credential::new(role.clone(), password.clone()));
    let credentials = RotatingCredentials::new(store.clone(), policy)
        .await
        .unwrap();
    (role, password, store, credentials)
}

/// Rotates a single role: the database first, then the store, then the provider.
pub async fn rotate_single(
    pg: &TestPostgres,
    role: &str,
    store: &MemorySource,
    credentials: &RotatingCredentials,
) {
    let new_password = random_password();
    pg.set_password(role, &new_password).await.unwrap();
    store.set(Credential::new(role.to_owned(), new_password));
    credentials.refresh().await.unwrap();
}

/// Backend pids of the sessions of `role`.
pub async fn session_pids(pg: &TestPostgres, role: &str) -> Vec<i32> {
    let admin = pg.admin().await.unwrap();
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The error and its sources, as an application's error report prints them.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A loopback TCP proxy to the server that holds every new connection for `delay` before
/// forwarding it: makes a connect slow enough to straddle a credential swap on purpose.
pub async fn slow_proxy(pg: &TestPostgres, delay: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = format!("{}:{}", pg.host(), pg.port());
    tokio::spawn(async move {
        // Bounded: a test opens a handful of connections.
        for _ in 0..64 {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    port
}
