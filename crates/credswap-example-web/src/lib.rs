//! A web application on credswap: an [`axum`] server whose database pool (deadpool-postgres, bb8
//! or sqlx, chosen by flag) follows a rotating credential.
//!
//! | route | what it does |
//! |---|---|
//! | `GET /query` | `SELECT current_user, pg_backend_pid()` through the pool (`?sleep_ms=N` adds up to 1 s of server time); JSON `{"user", "backend_pid"}` |
//! | `GET /health` | the provider's and the pool's state as JSON; 200, or 503 when the database has refused the current credential for longer than the grace, or the credential has expired |
//! | `GET /metrics` | every `credswap_*` metric ([`credswap::metrics`]) in the Prometheus text format, recorded at the scrape |
//!
//! The binary (`src/main.rs`) reads its flags and its credential; [`app`] is the whole
//! application, which the tests serve on `127.0.0.1:0` and drive over real HTTP.
//!
//! # `/health`, and what 503 means
//!
//! 503 says the credential does not work: new connections cannot be opened with it (the
//! database refuses it, or it has expired). It does not say that no request can be served:
//! the sessions the pool already holds keep serving (prove before drain), so alert on it rather
//! than taking every replica out of a load balancer at once. A refusal shorter than
//! [`Config::refused_grace`] is not reported: a single-user rotation changes the password in the
//! database before the store says so, and the provider needs a moment to fetch the new one.

#![forbid(unsafe_code)]

pub mod db;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use credswap::RotatingCredentials;
use credswap::metrics::Reporter;
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusRecorder};
use serde::{Deserialize, Serialize};

pub use db::{Database, PoolKind, Target, Whoami};

/// The `provider` label of the application's one provider in `/metrics`.
pub const PROVIDER_LABEL: &str = "main";

/// Settings of the application besides its pool.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long the database may refuse the current credential before `/health` answers 503.
    pub refused_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            refused_grace: Duration::from_secs(1),
        }
    }
}

/// Where `/metrics` renders from.
pub struct Metrics {
    inner: MetricsInner,
}

enum MetricsInner {
    /// The process-wide recorder: the application's other metrics show up too.
    Global(metrics_exporter_prometheus::PrometheusHandle),
    /// A recorder of this application alone (tests run several applications in one process).
    Local(PrometheusRecorder),
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            MetricsInner::Global(_) => "global",
            MetricsInner::Local(_) => "local",
        };
        f.debug_struct("Metrics").field("recorder", &kind).finish()
    }
}

impl Metrics {
    /// Installs the Prometheus recorder as the process's `metrics` recorder (no HTTP listener:
    /// `/metrics` renders it). Call once per process.
    ///
    /// # Errors
    ///
    /// When a recorder is installed already.
    pub fn install_global() -> Result<Self, BuildError> {
        let handle = PrometheusBuilder::new().install_recorder()?;
        Reporter::describe();
        Ok(Self {
            inner: MetricsInner::Global(handle),
        })
    }

    /// A recorder for this application alone, not installed globally.
    pub fn local() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&recorder, Reporter::describe);
        Self {
            inner: MetricsInner::Local(recorder),
        }
    }

    /// Records the reporter's values and renders everything in the Prometheus text format.
    fn render(&self, reporter: &Reporter) -> String {
        match &self.inner {
            MetricsInner::Global(handle) => {
                reporter.record();
                handle.render()
            }
            MetricsInner::Local(recorder) => {
                metrics::with_local_recorder(recorder, || reporter.record());
                recorder.handle().render()
            }
        }
    }
}

/// The application's state: the provider, the pool, and how `/metrics` renders.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    credentials: RotatingCredentials,
    db: Database,
    reporter: Reporter,
    metrics: Metrics,
    config: Config,
}

impl AppState {
    /// The state over a provider and the pool built from it.
    pub fn new(
        credentials: RotatingCredentials,
        db: Database,
        metrics: Metrics,
        config: Config,
    ) -> Self {
        let reporter = Reporter::new()
            .provider(PROVIDER_LABEL, &credentials)
            .pool(db.kind().as_str(), db.rotation());
        Self {
            inner: Arc::new(Inner {
                credentials,
                db,
                reporter,
                metrics,
                config,
            }),
        }
    }

    /// The pool.
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// The provider.
    pub fn credentials(&self) -> &RotatingCredentials {
        &self.inner.credentials
    }

    /// What `/health` answers.
    pub fn health(&self) -> HealthReport {
        HealthReport::new(
            &self.inner.credentials,
            &self.inner.db,
            self.inner.config.refused_grace,
        )
    }
}

/// The application: every route, over `state`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/query", get(query))
        .route("/health", get(health))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

/// `GET /query`'s parameters.
#[derive(Debug, Default, Deserialize)]
pub struct QueryParams {
    /// Server time to spend in the query, in milliseconds (at most 1000).
    pub sleep_ms: Option<u64>,
}

async fn query(
    State(state): State<AppState>,
    Query(params): Query<QueryParams>,
) -> Result<Json<Whoami>, AppError> {
    let sleep = Duration::from_millis(params.sleep_ms.unwrap_or(0));
    Ok(Json(state.inner.db.whoami(sleep).await?))
}

async fn health(State(state): State<AppState>) -> Response {
    let report = state.health();
    let status = if report.status == HealthStatus::Ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    let text = state.inner.metrics.render(&state.inner.reporter);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// A failed request: 500 with the error's message (drivers' and adapters' errors name roles and
/// SQLSTATEs, never a password).
struct AppError(credswap::BoxError);

impl From<credswap::BoxError> for AppError {
    fn from(e: credswap::BoxError) -> Self {
        AppError(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let message = error_chain(&*self.0);
        tracing::warn!(error = %message, "request failed");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": message })),
        )
            .into_response()
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// `/health`'s verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// 200: the credential works (or was refused for less than the grace).
    Ok,
    /// 503: the database refuses the credential, or it has expired.
    Unavailable,
}

/// What `/health` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthReport {
    /// The verdict (and the status code: 200 or 503).
    pub status: HealthStatus,
    /// Why it is not ok: `refused`, `expired`.
    pub reasons: Vec<String>,
    /// The provider's view of the current credential.
    pub credential: CredentialHealth,
    /// The pool's view.
    pub pool: PoolHealth,
}

/// The provider's part of `/health` ([`credswap::Health`] and [`credswap::Stats`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialHealth {
    /// The generation being served.
    pub generation: u64,
    /// The role being served (never the password).
    pub username: String,
    /// Age of the credential.
    pub age_seconds: f64,
    /// Time until the credential expires, if it has an end.
    pub expires_in_seconds: Option<f64>,
    /// For how long the database has refused the current credential, if it does.
    pub refused_for_seconds: Option<f64>,
    /// How many logins the database refused with the current credential.
    pub refused_logins: u64,
    /// `Health::is_healthy`: not overdue, expiring, degraded or refused.
    pub healthy: bool,
    /// Older than its rotation schedule.
    pub overdue: bool,
    /// Within the expiry margin.
    pub expiring: bool,
    /// Past its end.
    pub expired: bool,
    /// The last refreshes failed; the last good credential is served.
    pub degraded: bool,
    /// Refreshes that failed in a row.
    pub consecutive_failures: u32,
    /// The last refresh's error, if it failed.
    pub last_error: Option<String>,
    /// New credentials published since start.
    pub rotations: u64,
}

/// The pool's part of `/health` ([`credswap::contract::AdapterStats`] and the pool's own size).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolHealth {
    /// `deadpool`, `bb8` or `sqlx`.
    pub kind: String,
    /// Connections the pool holds, by its own count.
    pub size: usize,
    /// Of those, idle.
    pub idle: usize,
    /// Connections the adapter tracks as alive.
    pub connections: usize,
    /// Of those, of an older generation not closed yet.
    pub stale_connections: usize,
    /// Connections opened since start.
    pub opened: u64,
    /// Connections closed because their credential was stale.
    pub stale_closed: u64,
    /// Connect attempts the database refused.
    pub auth_failures: u64,
    /// Connects that failed for good.
    pub connect_failures: u64,
    /// Old connections let go to try a newer login.
    pub canaries: u64,
    /// Connects that fell back to the last accepted login.
    pub fallback_connects: u64,
    /// Connections opened with a store's pending credential.
    pub pending_connects: u64,
}

impl HealthReport {
    fn new(credentials: &RotatingCredentials, db: &Database, refused_grace: Duration) -> Self {
        let health = credentials.health();
        let stats = credentials.stats();
        let refused = health.refused();
        let mut reasons = Vec::new();
        if refused.is_some_and(|(since, _)| since >= refused_grace) {
            reasons.push("refused".to_owned());
        }
        if health.is_expired() {
            reasons.push("expired".to_owned());
        }
        let pool_stats = db.rotation().stats();
        let (size, idle) = db.size();
        HealthReport {
            status: if reasons.is_empty() {
                HealthStatus::Ok
            } else {
                HealthStatus::Unavailable
            },
            reasons,
            credential: CredentialHealth {
                generation: health.generation().get(),
                username: health.username().to_owned(),
                age_seconds: health.age().as_secs_f64(),
                expires_in_seconds: health.expires_in().map(|d| d.as_secs_f64()),
                refused_for_seconds: refused.map(|(since, _)| since.as_secs_f64()),
                refused_logins: refused.map_or(0, |(_, count)| count),
                healthy: health.is_healthy(),
                overdue: health.is_overdue(),
                expiring: health.is_expiring(),
                expired: health.is_expired(),
                degraded: health.is_degraded(),
                consecutive_failures: health.consecutive_failures(),
                last_error: health.last_error().map(|e| error_chain(e)),
                rotations: stats.rotations,
            },
            pool: PoolHealth {
                kind: db.kind().as_str().to_owned(),
                size,
                idle,
                connections: pool_stats.live(),
                stale_connections: pool_stats.live_stale(),
                opened: pool_stats.opened,
                stale_closed: pool_stats.stale_closed,
                auth_failures: pool_stats.auth_failures,
                connect_failures: pool_stats.connect_failures,
                canaries: pool_stats.canaries,
                fallback_connects: pool_stats.fallback_connects,
                pending_connects: pool_stats.pending_connects,
            },
        }
    }
}
