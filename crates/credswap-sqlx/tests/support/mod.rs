//! Shared setup of the sqlx adapter's integration tests (version-independent; the cases in
//! `cases.rs` are compiled once per enabled sqlx version).
#![allow(dead_code)]

use std::time::Duration;

use credswap_core::{Credential, MemorySource, RotatingCredentials};
use credswap_testkit::{TestPostgres, random_password};

pub use credswap_testkit::harness::{
    app_policy, error_chain as chain, manual_policy, postgres, session_pids, single_role,
};

/// The load scenarios run one at a time: 32 workers and a cluster each, on a 2-core machine,
/// would otherwise measure each other.
pub static SCENARIO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
