//! Shared setup of the sqlx adapter's integration tests (version-independent; the files beside
//! this one are compiled once per enabled sqlx version).
#![allow(dead_code, unused_macros, unused_imports)]

use std::time::Duration;

use credswap_testkit::TestPostgres;

/// Host, port and database of the test server, no user and no password, as the given sqlx
/// version's `PgConnectOptions`.
macro_rules! base_options {
    ($sqlx:ident, $pg:expr) => {
        $sqlx::postgres::PgConnectOptions::new_without_pgpass()
            .host($pg.host())
            .port($pg.port())
            .database($pg.database())
    };
}
pub(crate) use base_options;

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
