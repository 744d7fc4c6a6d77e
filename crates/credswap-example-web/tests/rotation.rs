//! HTTP load at the web example while the credential rotates, for each pool and both rotation
//! strategies, against a real PostgreSQL (scram-sha-256): no HTTP request fails and `/health`
//! stays 200 throughout.
//!
//! The load and the rotations are the test kit's scenario engine (`credswap_testkit::scenario`):
//! its workers send `GET /query` here instead of querying a pool, its rotator changes the
//! database and the store the application reads (never the application's provider), and its
//! sampler watches `pg_stat_activity` for stale sessions and the pool's bound.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use credswap::{BoxError, RotatingCredentials};
use credswap_example_web::{PoolKind, Whoami};
use credswap_testkit::harness::{app_policy, postgres_alone};
use credswap_testkit::scenario::{
    self, Progress, RotationSetup, ScenarioConfig, Strategy, Workload,
};

use common::App;

/// One request: `GET /query`, which must answer 200 as one of the application's roles.
struct HttpQuery {
    client: reqwest::Client,
    url: String,
    roles: Vec<String>,
}

#[async_trait]
impl Workload for HttpQuery {
    async fn request(&self) -> Result<(), BoxError> {
        let response = self.client.get(&self.url).send().await?;
        let status = response.status();
        let body = response.text().await?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("GET /query: {status}: {body}").into());
        }
        let whoami: Whoami = serde_json::from_str(&body)?;
        if !self.roles.contains(&whoami.user) {
            return Err(format!("GET /query answered as {}", whoami.user).into());
        }
        Ok(())
    }
}

/// Polls `/health` every 50 ms until stopped; counts the polls and keeps every answer that was
/// not 200.
struct HealthPoller {
    stop: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
    bad: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthPoller {
    fn start(app: &App) -> Self {
        let (stop, polls, bad) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let (client, url) = (app.client.clone(), app.url("/health"));
        let task = tokio::spawn({
            let (stop, polls, bad) = (stop.clone(), polls.clone(), bad.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let answer = match client.get(&url).send().await {
                        Ok(response) => {
                            let status = response.status();
                            let body = response.text().await.unwrap_or_default();
                            (status != reqwest::StatusCode::OK).then(|| format!("{status}: {body}"))
                        }
                        Err(e) => Some(format!("no answer: {e}")),
                    };
                    polls.fetch_add(1, Ordering::Relaxed);
                    if let Some(answer) = answer {
                        bad.lock().unwrap().push(answer);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        HealthPoller {
            stop,
            polls,
            bad,
            task,
        }
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the health poller");
        let bad = std::mem::take(&mut *self.bad.lock().unwrap());
        (self.polls.load(Ordering::Relaxed), bad)
    }
}

/// Every pool under both strategies: 4 s of 16 HTTP clients through a pool of 8, a rotation
/// every second (3 per run), `/health` polled at 20 Hz. A failure names the pool, the strategy
/// and the scenario's whole report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_http_request_fails_and_health_stays_200_while_the_credential_rotates() {
    let pg = postgres_alone().await;
    let config = ScenarioConfig {
        duration: Duration::from_secs(4),
        rotate_every: Some(Duration::from_secs(1)),
        concurrency: 16,
        pool_max_size: 8,
        // Old sessions must be gone 2 s after each rotation (they go in ~0.3 s; the margin is
        // for a 2-core machine shared with builds).
        drain_grace: Duration::from_secs(2),
        ..ScenarioConfig::default()
    };
    let mut failures = Vec::new();
    for kind in PoolKind::ALL {
        for strategy in Strategy::ALL {
            let started = Instant::now();
            let setup = RotationSetup::create(&pg, strategy).await.expect("roles");
            let roles = setup.roles().to_vec();
            let credentials = RotatingCredentials::new(setup.store().clone(), app_policy(strategy))
                .await
                .expect("provider");
            let app = App::start(&pg, kind, credentials, config.pool_max_size).await;
            let workload = Arc::new(HttpQuery {
                client: app.client.clone(),
                url: app.url("/query"),
                roles,
            });
            let health = HealthPoller::start(&app);
            let report =
                scenario::run(&pg, setup, workload, &config, Arc::new(Progress::default()))
                    .await
                    .expect("the scenario runs");
            let (polls, bad_health) = health.finish().await;
            let (status, body) = app.health().await;
            let summary = format!(
                "{kind}, {}; /health polled {polls} times, not 200: {:?}; final /health {status} {body}",
                report.summary(),
                &bad_health[..bad_health.len().min(3)],
            );
            eprintln!("{summary} ({:.1} s)", started.elapsed().as_secs_f64());
            let clean = report.requests_failed == 0
                && bad_health.is_empty()
                && status == 200
                && report.rotations >= 3
                && report.requests_ok >= 200
                && report.stale_after_drain == 0
                && report.peak_backends <= config.pool_max_size
                && polls >= 20
                && body["credential"]["generation"].as_u64() == Some(1 + report.rotations);
            if !clean {
                failures.push(summary);
            }
            app.stop().await;
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
