//! What the web example's tests share: the application served on `127.0.0.1:0`, and an HTTP
//! client for it.
#![allow(dead_code)]

use std::time::Duration;

use credswap::RotatingCredentials;
use credswap_example_web::{AppState, Config, Database, Metrics, PoolKind, Target, app};
use credswap_testkit::TestPostgres;

/// The application, served over real HTTP on a loopback port.
pub struct App {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub state: AppState,
    pub client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl App {
    /// Builds the pool of `kind` over `credentials` and serves the application.
    pub async fn start(
        pg: &TestPostgres,
        kind: PoolKind,
        credentials: RotatingCredentials,
        max_size: usize,
    ) -> App {
        let target = Target {
            host: pg.host().to_owned(),
            port: pg.port(),
            dbname: pg.database().to_owned(),
        };
        let db = Database::connect(kind, &target, credentials.clone(), max_size)
            .await
            .expect("the pool");
        // A recorder per application: the tests of a binary share the process.
        let state = AppState::new(credentials, db, Metrics::local(), Config::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = app(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        App {
            base,
            state,
            client,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`: the status and the body.
    pub async fn get(&self, path: &str) -> Result<(u16, String), reqwest::Error> {
        let response = self.client.get(self.url(path)).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// `GET /health`, parsed.
    pub async fn health(&self) -> (u16, serde_json::Value) {
        let (status, body) = self.get("/health").await.expect("/health answers");
        let json = serde_json::from_str(&body).expect("/health is JSON");
        (status, json)
    }

    /// Stops serving and closes the pool.
    pub async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        self.state.database().close().await;
    }
}
