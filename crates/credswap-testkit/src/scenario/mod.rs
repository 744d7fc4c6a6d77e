//! The load-and-rotate engine every adapter test and the drill run.
//!
//! N workers loop a request through the pool under test for a duration while a rotator rotates
//! the credential on a schedule with real SQL against a [`TestPostgres`]. A sampler reads
//! `pg_stat_activity` every 10 ms (100 Hz). The engine returns a [`ScenarioReport`]: requests
//! ok and failed, rotations, latency percentiles, peak backends of the application's roles, and
//! sessions authenticated before a rotation still open after the drain.
//!
//! The application learns of a rotation only as it would in production: the rotator changes the
//! database and the store (a [`MemorySource`](credswap_core::MemorySource)), never the
//! application's provider. Whatever the pool under test does with that store (refresh schedule,
//! auth-failure retry) is on it.
//!
//! [`run`] uses the built-in rotator over a [`RotationSetup`]; [`run_with`] takes any [`Rotate`]
//! (for instance one that drives a real secret store and its rotation protocol) and runs the same
//! workers, schedule and sampler around it.
//!
//! Two strategies, as real stores rotate:
//!
//! - [`Strategy::AlternatingUsers`]: two login roles; a rotation gives the *inactive* role a
//!   fresh password, points the store at it, and after the overlap resets the retired role's
//!   password (its old secret is revoked).
//! - [`Strategy::SingleUser`]: one role; a rotation runs `ALTER ROLE ... PASSWORD` first and
//!   updates the store a moment later, as between AWS `setSecret` and `finishSecret`: the old
//!   password is dead before the application can know the new one (zero overlap).

mod report;
mod rotator;
mod setup;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use credswap_core::BoxError;
use tokio::time::Instant;

pub use rotator::{Rotate, RotationMarks};
pub use setup::{RotationSetup, Strategy};

use crate::{Error, TestPostgres};
use report::percentile_ms;
use rotator::{MemoryRotator, drive};

/// One request through the pool under test (for example `SELECT current_user`).
#[async_trait]
pub trait Workload: Send + Sync + 'static {
    /// Runs the request; an error counts as a failed request.
    async fn request(&self) -> Result<(), BoxError>;
}

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    /// How long the workers run.
    pub duration: Duration,
    /// The rotation schedule; `None` runs without rotating (the baseline).
    pub rotate_every: Option<Duration>,
    /// Concurrent workers.
    pub concurrency: usize,
    /// The pool's `max_size` (reported, and the bound `peak_backends` is judged against).
    pub pool_max_size: usize,
    /// Sessions authenticated before a rotation and still open this long after it are stale.
    pub drain_grace: Duration,
    /// Alternating users: how long after a rotation the retired role's password is revoked.
    /// `None`: half the rotation interval.
    pub overlap: Option<Duration>,
    /// Single user: how long the store lags the database.
    pub store_lag: Duration,
    /// How long each worker pauses after a request before its next (not counted in the
    /// latency): zero (the default) runs the workers flat out; a drill of many pools on a
    /// small machine gives each worker a request rate instead.
    pub think_time: Duration,
    /// How often the sampler reads `pg_stat_activity` ([`SAMPLE_EVERY`] by default: 100 Hz,
    /// so that a pool's brief overlaps are seen). Each read scans every session slot of the
    /// server, so a fleet's server (`max_connections` in the hundreds) spent a quarter of a
    /// core on 100 Hz; a fleet samples less often.
    pub sample_every: Duration,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            rotate_every: Some(Duration::from_secs(1)),
            concurrency: 32,
            pool_max_size: 8,
            drain_grace: Duration::from_secs(1),
            overlap: None,
            store_lag: Duration::from_millis(50),
            think_time: Duration::ZERO,
            sample_every: SAMPLE_EVERY,
        }
    }
}

/// What a scenario did over time, in buckets of [`Timeline::BUCKET`]: for plots.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Timeline {
    /// Successful requests that started in each bucket.
    pub ok: Vec<u64>,
    /// Failed requests that started in each bucket.
    pub failed: Vec<u64>,
    /// The 99th percentile latency of the requests that started in each bucket, ms (0 when none).
    pub p99_ms: Vec<f64>,
    /// The most sessions of the application's roles seen in each bucket.
    pub backends: Vec<usize>,
    /// When each rotation was marked, since the start.
    pub rotations: Vec<Duration>,
}

impl Timeline {
    /// The width of one bucket.
    pub const BUCKET: Duration = Duration::from_millis(250);

    fn build(
        duration: Duration,
        samples: &[Sample],
        failed_at: &[u64],
        backends_at: &[(u64, usize)],
        rotations: impl Iterator<Item = Duration>,
    ) -> Self {
        let width = Self::BUCKET.as_micros() as u64;
        let n = (duration.as_micros() as u64).div_ceil(width).max(1) as usize;
        let bucket = |t: u64| ((t / width) as usize).min(n - 1);
        let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); n];
        for (t, took) in samples {
            latencies[bucket(*t)].push(*took);
        }
        let mut failed = vec![0; n];
        for t in failed_at {
            failed[bucket(*t)] += 1;
        }
        let mut backends = vec![0; n];
        for (t, count) in backends_at {
            let i = (*t / width) as usize;
            if i < n {
                backends[i] = backends[i].max(*count);
            }
        }
        Timeline {
            ok: latencies.iter().map(|l| l.len() as u64).collect(),
            failed,
            p99_ms: latencies
                .iter_mut()
                .map(|l| percentile_ms(l, 0.99))
                .collect(),
            backends,
            rotations: rotations.collect(),
        }
    }
}

/// Live counters a caller can read while a scenario runs (for progress display).
#[derive(Debug, Default)]
pub struct Progress {
    ok: AtomicU64,
    failed: AtomicU64,
    rotations: AtomicU64,
}

impl Progress {
    /// Requests that succeeded so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Requests that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Rotations done so far.
    pub fn rotations(&self) -> u64 {
        self.rotations.load(Ordering::Relaxed)
    }

    /// Counts a rotation (the scenario's rotator does; a caller whose store rotates by itself,
    /// such as Vault, counts the ones it sees).
    pub fn count_rotation(&self) {
        self.rotations.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a scenario measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioReport {
    /// The rotation strategy.
    pub strategy: Strategy,
    /// Seconds the workers ran.
    pub duration_s: f64,
    /// Workers.
    pub concurrency: usize,
    /// The pool's `max_size`.
    pub pool_max_size: usize,
    /// Rotations performed.
    pub rotations: u64,
    /// Requests that succeeded.
    pub requests_ok: u64,
    /// Requests that failed.
    pub requests_failed: u64,
    /// Successful requests per second.
    pub throughput_rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// 99th percentile latency of requests that overlapped a drain (rotation until its last
    /// stale session closed), ms; 0 without rotations.
    pub p99_ms_rotating: f64,
    /// Most sessions of the application's roles seen at once in `pg_stat_activity`.
    pub peak_backends: usize,
    /// Sessions authenticated before a rotation still open `drain_grace` after it (worst
    /// rotation).
    pub stale_after_drain: usize,
    /// Longest time from a rotation to its last stale session closing, ms (a drain not finished
    /// when the run ended counts until then).
    pub max_drain_ms: f64,
    /// Mean time between the starts of consecutive rotations, ms; 0 with fewer than two. Longer
    /// than `rotate_every` when rotations take longer than the interval (the next one then
    /// starts when the previous one ends).
    pub mean_rotation_interval_ms: f64,
    /// Up to five distinct error messages of failed requests.
    pub first_errors: Vec<String>,
    /// The run over time (throughput, p99, backends, rotations), for plots.
    pub timeline: Timeline,
}

impl ScenarioReport {
    /// Whether the run meets the adapter contract: no failed request, nothing stale after the
    /// drain, no more backends than the pool's `max_size`.
    pub fn is_clean(&self) -> bool {
        self.requests_failed == 0
            && self.stale_after_drain == 0
            && self.peak_backends <= self.pool_max_size
    }

    /// A one-line summary for test failure messages.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} rotations, {} ok, {} failed, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, p99 rotating {:.2} ms, \
             peak backends {}/{}, stale after drain {}, max drain {:.0} ms, errors {:?}",
            self.strategy,
            self.rotations,
            self.requests_ok,
            self.requests_failed,
            self.throughput_rps,
            self.p50_ms,
            self.p99_ms,
            self.p99_ms_rotating,
            self.peak_backends,
            self.pool_max_size,
            self.stale_after_drain,
            self.max_drain_ms,
            self.first_errors
        )
    }
}
/// How often the sampler reads `pg_stat_activity` by default: 100 Hz, so that the brief
/// overlaps of a pool rebuilt beside the old one (a few milliseconds with short queries) are
/// seen.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// One rotation as the sampler tracks it.
pub(crate) struct RotationMark {
    at: SystemTime,
    at_instant: Instant,
    /// When the sampler first saw no session older than the rotation.
    drained_at: Option<Instant>,
    /// Old sessions still open at `at + drain_grace` (None until that sample).
    stale_at_grace: Option<usize>,
}

/// Request timing: start offset from the run start and duration, both in microseconds.
type Sample = (u64, u64);

/// Runs the scenario and returns what it measured.
///
/// `setup` is moved in: the rotator owns the roles and the store from here on. The caller keeps
/// the pool under test (inside `workload`) alive until this returns.
pub async fn run(
    pg: &TestPostgres,
    setup: RotationSetup,
    workload: Arc<dyn Workload>,
    config: &ScenarioConfig,
    progress: Arc<Progress>,
) -> Result<ScenarioReport, Error> {
    let rotator = MemoryRotator::new(pg.admin_config(), setup, config);
    run_with(pg, rotator, workload, config, progress).await
}

/// [`run`] with any [`Rotate`]: the workers, the schedule (`config.rotate_every`) and the
/// sampler are the same; `config.overlap` and `config.store_lag` are the built-in rotator's and
/// are ignored here.
pub async fn run_with<R: Rotate>(
    pg: &TestPostgres,
    rotator: R,
    workload: Arc<dyn Workload>,
    config: &ScenarioConfig,
    progress: Arc<Progress>,
) -> Result<ScenarioReport, Error> {
    let strategy = rotator.strategy();
    let roles = rotator.roles();
    let rotator_sessions = rotator.own_application_name();
    let sampler_client = pg.admin().await?;
    let start = Instant::now();
    let deadline = start + config.duration;
    let stop = Arc::new(AtomicBool::new(false));

    let think_time = config.think_time;
    let workers: Vec<_> = (0..config.concurrency)
        .map(|_| {
            let workload = Arc::clone(&workload);
            let progress = Arc::clone(&progress);
            tokio::spawn(async move {
                let mut samples: Vec<Sample> = Vec::with_capacity(4096);
                let mut errors: Vec<String> = Vec::new();
                let mut failed = 0u64;
                let mut failed_at: Vec<u64> = Vec::new();
                while Instant::now() < deadline {
                    // Let the task that was woken for the connection just returned run first,
                    // as independent request handlers would; a worker that re-acquires in the
                    // same poll starves waiters of pools with unfair wake-ups (bb8).
                    tokio::task::yield_now().await;
                    let t0 = Instant::now();
                    let result = workload.request().await;
                    let took = t0.elapsed();
                    match result {
                        Ok(()) => {
                            progress.ok.fetch_add(1, Ordering::Relaxed);
                            samples
                                .push(((t0 - start).as_micros() as u64, took.as_micros() as u64));
                            if !think_time.is_zero() {
                                tokio::time::sleep(think_time).await;
                            }
                        }
                        Err(e) => {
                            failed += 1;
                            failed_at.push((t0 - start).as_micros() as u64);
                            progress.failed.fetch_add(1, Ordering::Relaxed);
                            if errors.len() < 5 {
                                errors.push(crate::harness::error_chain(&*e));
                            }
                            // Do not spin on a dead pool.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                (samples, failed, errors, failed_at)
            })
        })
        .collect();

    let marks = RotationMarks::default();
    let rotator = {
        let marks = marks.clone();
        let progress = Arc::clone(&progress);
        let stop = Arc::clone(&stop);
        let every = config.rotate_every;
        tokio::spawn(async move { drive(rotator, every, deadline, marks, progress, stop).await })
    };

    // Sample pg_stat_activity (100 Hz by default) until the workers stop and every rotation
    // had its grace.
    let mut peak = 0usize;
    let mut backends_at: Vec<(u64, usize)> = Vec::new();
    let mut ticker = tokio::time::interval(config.sample_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let role_refs: Vec<&str> = roles.iter().map(String::as_str).collect();
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let starts =
            session_starts(&sampler_client, &role_refs, rotator_sessions.as_deref()).await?;
        peak = peak.max(starts.len());
        backends_at.push((
            now.saturating_duration_since(start).as_micros() as u64,
            starts.len(),
        ));
        let mut all_settled = true;
        {
            let mut marks = marks.lock();
            for mark in marks.iter_mut() {
                let old = starts.iter().filter(|s| **s < mark.at).count();
                if mark.drained_at.is_none() && old == 0 {
                    mark.drained_at = Some(now);
                }
                if mark.stale_at_grace.is_none() && now >= mark.at_instant + config.drain_grace {
                    mark.stale_at_grace = Some(old);
                }
                if mark.stale_at_grace.is_none() {
                    all_settled = false;
                }
            }
        }
        if now >= deadline && rotator.is_finished() && all_settled {
            break;
        }
        if now >= deadline + config.drain_grace + Duration::from_secs(5) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (rotations, starts) = match rotator.await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(Error::startup(format!("a rotation failed: {e}"))),
        Err(join) => return Err(Error::startup(format!("the rotator task panicked: {join}"))),
    };
    let mean_rotation_interval_ms = match (starts.first(), starts.last()) {
        (Some(first), Some(last)) if starts.len() >= 2 => {
            (*last - *first).as_secs_f64() * 1000.0 / (starts.len() - 1) as f64
        }
        _ => 0.0,
    };

    let mut samples = Vec::new();
    let mut failed = 0;
    let mut errors: Vec<String> = Vec::new();
    let mut failed_at = Vec::new();
    let mut seen = HashSet::new();
    for worker in workers {
        let (s, f, e, at) = worker
            .await
            .map_err(|join| Error::startup(format!("a worker task panicked: {join}")))?;
        samples.extend(s);
        failed += f;
        failed_at.extend(at);
        for message in e {
            if errors.len() < 5 && seen.insert(message.clone()) {
                errors.push(message);
            }
        }
    }

    let end = Instant::now();
    let marks = std::mem::take(&mut *marks.lock());
    let windows: Vec<(u64, u64)> = marks
        .iter()
        .map(|m| {
            let from = (m.at_instant.saturating_duration_since(start)).as_micros() as u64;
            let to =
                (m.drained_at.unwrap_or(end).saturating_duration_since(start)).as_micros() as u64;
            (from, to.max(from))
        })
        .collect();
    let mut all: Vec<u64> = samples.iter().map(|(_, d)| *d).collect();
    let mut rotating: Vec<u64> = samples
        .iter()
        .filter(|(s, d)| windows.iter().any(|(from, to)| *s <= *to && s + d >= *from))
        .map(|(_, d)| *d)
        .collect();
    let duration_s = config.duration.as_secs_f64();
    let requests_ok = samples.len() as u64;
    let timeline = Timeline::build(
        config.duration,
        &samples,
        &failed_at,
        &backends_at,
        marks
            .iter()
            .map(|m| m.at_instant.saturating_duration_since(start)),
    );
    Ok(ScenarioReport {
        strategy,
        duration_s,
        concurrency: config.concurrency,
        pool_max_size: config.pool_max_size,
        rotations,
        requests_ok,
        requests_failed: failed,
        throughput_rps: requests_ok as f64 / duration_s,
        p50_ms: percentile_ms(&mut all, 0.50),
        p99_ms: percentile_ms(&mut all, 0.99),
        p99_ms_rotating: percentile_ms(&mut rotating, 0.99),
        peak_backends: peak,
        stale_after_drain: marks
            .iter()
            .filter_map(|m| m.stale_at_grace)
            .max()
            .unwrap_or(0),
        max_drain_ms: marks
            .iter()
            .map(|m| {
                m.drained_at
                    .unwrap_or(end)
                    .saturating_duration_since(m.at_instant)
                    .as_secs_f64()
                    * 1000.0
            })
            .fold(0.0, f64::max),
        mean_rotation_interval_ms,
        first_errors: errors,
        timeline,
    })
}

/// When each session of `roles` began, except those with `application_name` `skip` (the
/// rotator's own).
async fn session_starts(
    client: &tokio_postgres::Client,
    roles: &[&str],
    skip: Option<&str>,
) -> Result<Vec<SystemTime>, Error> {
    // One row (an array), not a row per session.
    let row = client
        .query_one(
            "SELECT coalesce(array_agg(backend_start), '{}') FROM pg_stat_activity \
             WHERE usename = ANY($1) AND backend_start IS NOT NULL \
             AND ($2::text IS NULL OR application_name IS DISTINCT FROM $2::text)",
            &[&roles, &skip],
        )
        .await
        .map_err(|e| Error::query("sampling pg_stat_activity failed", e))?;
    Ok(row.get::<_, Vec<SystemTime>>(0))
}

#[cfg(test)]
mod tests {
    use super::report::percentile_ms;
    use super::*;

    #[test]
    fn strategy_names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(s.as_str().parse::<Strategy>().unwrap(), s);
        }
        assert!(
            "both"
                .parse::<Strategy>()
                .unwrap_err()
                .contains("alternating-users")
        );
    }

    #[test]
    fn percentiles() {
        let mut v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile_ms(&mut v, 0.5), 50.0);
        assert_eq!(percentile_ms(&mut v, 0.99), 99.0);
        assert_eq!(percentile_ms(&mut [], 0.99), 0.0);
    }
}
