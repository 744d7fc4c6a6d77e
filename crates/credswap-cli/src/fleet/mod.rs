//! `credswap drill --fleet N`: N application instances in one process, all reading one secret
//! while the store rotates it, as a fleet of pods does.
//!
//! Each instance is what one pod would run: a source client of its own (`--source aws`: a
//! `SecretsManagerSource` on an SDK client of its own, with its own retry partition, built from
//! moto's endpoint or the fault proxy's; `--source vault-static`: a `VaultSource` over one
//! static role with its own HTTP client and its own Vault token, a child of the dev server's
//! root token, at OpenBao's address or the fault proxy's; `--source vault-dynamic`: the same
//! over one dynamic role, holding a lease of its own; `--source memory`: a handle on the
//! one in-memory store), its own provider (refresh every `--refresh-interval`, the default 10%
//! jitter) and its own pool of `--pool-size`, built by [`adapters::build`] as in the
//! single-pool drill. The scenario engine runs N x `--concurrency` workers whose requests are
//! spread over the instances in turn (a load balancer in front of the fleet), rotates on its
//! schedule (the drill's own `ALTER ROLE` rotator for memory, `credswap_rotate::Rotator` for
//! aws, Vault's own static-role rotation for vault-static: the drill calls `POST
//! database/rotate-role/<role>` and Vault changes the password at the database and in its
//! storage), samples `pg_stat_activity` (at 20 Hz, [`FLEET_SAMPLE_EVERY`]) and judges stale
//! sessions as in the single-pool drill,
//! with a drain grace of `--refresh-interval` + 2 s (an instance learns of a rotation at its
//! next refresh).
//!
//! A Vault static role is one user: `--source vault-static` runs the single-user strategy only
//! (`--strategy` does not apply), with no overlap in the instances' policy. The old password
//! stops working at the instant Vault changes it, inside the rotate-role call, and the store
//! answers the new one from when the call returned: the window the memory world models with
//! its 50-ms store lag (`STORE_LAG`) is Vault's own here, and reported (the call's duration, in
//! the rotations' note). The static role's own `rotation_period` is a day, so Vault never
//! rotates it on its own within a run (`--rotation-period` does not apply); the role is
//! created per run and deleted after it. The targets are the other worlds': convergence within
//! `--refresh-interval` + 2 s (3 x refresh with `--store-throttle`), no failed request, no
//! stale session.
//!
//! With `--source vault-dynamic` each instance holds a lease and a database user of its own
//! (a dynamic role, each instance with its own token and HTTP client), and a rotation is each
//! lease coming to its end: each source issues its next user at its first fetch within the
//! drain grace and a refresh interval of the end, the provider fetching at the end less the
//! grace at the latest, and the users live `--rotate-every` + that margin, so the fleet, whose
//! first leases are issued together, replaces them in waves every `--rotate-every`. Nobody but
//! Vault changes anything: the scenario engine runs the workers only, and [`dynamic`] defines
//! the waves, each instance's store change (when its lease entered that margin) and the stale
//! sessions (a user's sessions still open the grace after its instance moved on).
//! `--strategy` does not apply (the table says `dynamic`).
//!
//! # How each number is measured
//!
//! - **Convergence** of a rotation: the time from the store's change (the memory store's
//!   update; Secrets Manager's finishSecret: the end of `Rotator::rotate`; Vault: when
//!   `database/rotate-role` returned) until an instance first opened a connection with a
//!   newer credential than it had when the rotation began.
//!   An observer polls every instance's adapter counters every [`POLL`] (the provider's
//!   generation and `AdapterStats::opened_per_generation`), so a first connect is seen up to
//!   one poll late. A first connect before the store's change (a pending credential the
//!   database took already: single user on Secrets Manager) counts 0. Per rotation: p50, p99
//!   and max over the instances; per run, over every instance of every rotation. An instance
//!   that never connected with the new credential before the observer stopped counts with
//!   the time until then, and is counted in `not_converged`. A dynamic role's wave has no one
//!   store change: each instance's convergence counts from when its lease entered the margin
//!   in which a fetch issues the next user (its end as Vault's capped renewal states it).
//! - **Store calls**: the providers' `Stats::store_calls` (fetches of the current and the
//!   pending credential; for Vault each fetch is one read of `database/static-creds`, also
//!   when it failed, and the JSON's `store_api_calls` is the sources' own count of their reads),
//!   summed over the fleet by the same observer (so with `--store-throttle` each retry of a
//!   throttled Vault read is a call of its own, where the AWS SDK's retries stay inside one
//!   fetch: a vault-static fleet's steady calls per refresh grow as 1 / (1 - P); with
//!   `--source vault-dynamic` the store calls are the sources' calls to Vault, since the
//!   providers' fetches between a lease's issue and its renewal are served from the sources'
//!   caches: [`dynamic::vault_calls`]); counted
//!   from the start of the load (the instances' initial reads are not in it). *Steady state*: the rate in the
//!   parts of the run outside every rotation's window, a rotation's window being from its
//!   start to its store change + `--refresh-interval` + 2 s; reported per instance per refresh
//!   interval and per minute. *Per rotation*: the calls in its window per instance, its
//!   scheduled refreshes included (the run's figure is the worst rotation), and beside it
//!   (`extra_store_calls_per_instance`) what is beyond the steady rate over the window's
//!   length: what the rotation itself cost. A window lasts as long as the rotator takes, so a
//!   rotator slowed by the store adds scheduled refreshes to it.
//!   *The busiest second* (`peak_store_calls_per_s`, and `steady_peak_store_calls_per_s`
//!   outside the rotations' windows): the most calls the fleet made in a second starting at
//!   any poll, the unit of a store's rate quota. A fleet that refreshes in step shows it here
//!   first: its whole interval's calls in one second.
//! - **Throttled calls**: with `--source aws` the calls the fault proxy answered with
//!   ThrottlingException (HTTP requests: the SDK retries them, up to 3 attempts a call); with
//!   `--source vault-static` the reads the fault proxy answered with HTTP 429 and
//!   `{"errors":["rate limit quota exceeded"]}` (`credswap-vault` classifies 429 as the store
//!   unavailable and does not retry: each is a failed fetch, after which the provider keeps the
//!   credential it has and tries again with backoff, 200 ms doubling up to the refresh
//!   interval, at most 2 s); with `--source memory` the fetches the store's simulated
//!   throttling failed. The drill's own calls (rotate-role, the first read) bypass the proxy.
//! - **Logins**: the server's log (`log_connections`): the most logins of the run's roles in
//!   any one second while the load ran (the instances' first connections are opened before:
//!   a warm-up opens `--pool-size` per instance), and the refused logins. Both include the
//!   rotator's own logins (credswap-rotate logs in as the roles: a few per rotation; Vault
//!   changes a static role's password over its own admin connection, with no login as it).
//! - **Failed requests** and **stale sessions**: the scenario engine's; with `--source
//!   vault-dynamic`, the stale sessions, `peak be` and the longest drain are
//!   [`dynamic::Monitor`]'s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use credswap_aws::SecretsManagerSource;
use credswap_aws::aws_sdk_secretsmanager::config::retry::RetryPartition;
use credswap_aws::aws_sdk_secretsmanager::{self as secretsmanager, Client};
use credswap_core::contract::AdapterStats;
use credswap_core::{
    BoxError, Credential, CredentialSource, MemorySource, Policy, RotatingCredentials, Stats,
};
use credswap_testkit::scenario::{
    self, Progress, Rotate, RotationMarks, RotationSetup, ScenarioConfig, ScenarioReport, Strategy,
    Timeline, Workload,
};
use credswap_testkit::{FaultProxy, TestBao, TestPostgres, most_in_any, random_password};
use credswap_vault::VaultSource;
use serde::Serialize;
use tokio::time::Instant;

use crate::adapters::{self, App};
use crate::cli::{AdapterName, DrillArgs, ScenarioName, SourceName};
use crate::output::ProgressDisplay;
use crate::plot;
use crate::secrets_manager::{self, SecretsManagerRotator};
use crate::vault;

mod dynamic;

/// How often the observer reads every instance's counters.
const POLL: Duration = Duration::from_millis(20);

/// Beyond the refresh interval: how long after the store's change a rotation's window lasts
/// (its store calls, its logins), and the drain grace after which a session is stale.
const SETTLE: Duration = Duration::from_secs(2);

/// `--source memory`, single user: how long the store lags the database.
const STORE_LAG: Duration = Duration::from_millis(50);

/// How long after the store's change the fleet has to converge (the issue's targets), and the
/// drain grace after which a session of the old credential is stale: refresh + 2 s, or 3 x
/// refresh when the store throttles.
fn convergence_bound(refresh: Duration, store_throttle: f64) -> Duration {
    if store_throttle > 0.0 {
        refresh * 3
    } else {
        refresh + SETTLE
    }
}

/// How often a fleet's sampler reads `pg_stat_activity`: 20 Hz. At the single-pool drill's
/// 100 Hz, the sampler's backend took a quarter of a core (`top`, 300 instances on aws), on the
/// two cores moto, the server and the fleet share; its stale-session judgement is at
/// refresh + 2 s, and `peak be` is the most sessions seen by these reads.
const FLEET_SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// The pools the warm-up fills at once.
const WARMUP_POOLS: usize = 16;

/// Sessions the server keeps beside the fleet's: the admin, the sampler, the rotator, a margin.
const SERVER_MARGIN: usize = 50;

/// When a rotation began, and when the store changed (the instances can learn of it from then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RotationTimes {
    started: Instant,
    changed: Instant,
}

type RotationTimesLog = Arc<Mutex<Vec<RotationTimes>>>;

fn record(log: &RotationTimesLog, times: RotationTimes) {
    log.lock().unwrap_or_else(|p| p.into_inner()).push(times);
}

/// The fleet's rotator, recording when each rotation began and when the store changed.
enum FleetRotator {
    Memory(MemoryFleetRotator),
    Aws(Box<SecretsManagerRotator>, RotationTimesLog),
    VaultStatic(VaultStaticRotator),
    /// Vault ends each instance's lease itself: nothing to do on a schedule.
    VaultDynamic,
}

#[async_trait]
impl Rotate for FleetRotator {
    fn strategy(&self) -> Strategy {
        match self {
            FleetRotator::Memory(m) => m.strategy,
            FleetRotator::Aws(r, _) => r.strategy(),
            FleetRotator::VaultStatic(_) => Strategy::SingleUser,
            // A new user each time (the table says "dynamic").
            FleetRotator::VaultDynamic => Strategy::AlternatingUsers,
        }
    }

    fn roles(&self) -> Vec<String> {
        match self {
            FleetRotator::Memory(m) => m.roles.clone(),
            FleetRotator::Aws(r, _) => r.roles(),
            FleetRotator::VaultStatic(v) => vec![v.role.clone()],
            // Vault names the users as it issues them; the dynamic monitor finds them.
            FleetRotator::VaultDynamic => Vec::new(),
        }
    }

    fn own_application_name(&self) -> Option<String> {
        match self {
            // Vault changes the password over its own admin connection, never as the role.
            FleetRotator::Memory(_) | FleetRotator::VaultStatic(_) | FleetRotator::VaultDynamic => {
                None
            }
            FleetRotator::Aws(r, _) => r.own_application_name(),
        }
    }

    async fn rotate(&mut self, marks: &RotationMarks) -> Result<(), BoxError> {
        match self {
            FleetRotator::Memory(m) => m.rotate(marks).await,
            FleetRotator::VaultStatic(v) => v.rotate(marks).await,
            FleetRotator::VaultDynamic => Ok(()),
            FleetRotator::Aws(r, log) => {
                let started = Instant::now();
                // The four steps; the store changes at finishSecret, the last.
                r.rotate(marks).await?;
                record(
                    log,
                    RotationTimes {
                        started,
                        changed: Instant::now(),
                    },
                );
                Ok(())
            }
        }
    }
}

/// The scenario engine's in-memory rotation (`ALTER ROLE`, then the store), recording the
/// store's change. Alternating users: the retired role's password is revoked `overlap` after
/// the store points at the other role.
struct MemoryFleetRotator {
    pg: Arc<TestPostgres>,
    strategy: Strategy,
    roles: Vec<String>,
    store: MemorySource,
    overlap: Duration,
    active: usize,
    log: RotationTimesLog,
}

impl MemoryFleetRotator {
    async fn rotate(&mut self, marks: &RotationMarks) -> Result<(), BoxError> {
        let started = Instant::now();
        let password = random_password();
        match self.strategy {
            Strategy::AlternatingUsers => {
                let incoming = 1 - self.active;
                let (new_role, old_role) = (
                    self.roles[incoming].clone(),
                    self.roles[self.active].clone(),
                );
                self.pg.set_password(&new_role, &password).await?;
                marks.mark();
                self.store.set(Credential::new(new_role, password));
                record(
                    &self.log,
                    RotationTimes {
                        started,
                        changed: Instant::now(),
                    },
                );
                self.active = incoming;
                tokio::time::sleep(self.overlap).await;
                self.pg.set_password(&old_role, &random_password()).await?;
            }
            Strategy::SingleUser => {
                let role = self.roles.first().ok_or("the run has no role")?.clone();
                // Marked when the database has the new password, as in the single-pool drill's
                // rotator (a slow `ALTER ROLE` is the server's time, not the fleet's).
                self.pg.set_password(&role, &password).await?;
                marks.mark();
                tokio::time::sleep(STORE_LAG).await;
                self.store.set(Credential::new(role, password));
                record(
                    &self.log,
                    RotationTimes {
                        started,
                        changed: Instant::now(),
                    },
                );
            }
        }
        Ok(())
    }
}

/// `--source vault-static`: Vault's own rotation of the static role, `POST
/// database/rotate-role/<role>`, on the scenario's schedule. Vault changes the password at the
/// database and then stores it, both inside the call: the old password stops working somewhere
/// in it (single user, no overlap), and a read returns the new one from when it returned, the
/// store's change. Sessions opened before the call are the old credential's.
struct VaultStaticRotator {
    bao: Arc<TestBao>,
    role: String,
    log: RotationTimesLog,
    /// How long each rotate-role call took (the window in which the database has the new
    /// password and the store may still answer the old one).
    took: Arc<Mutex<Vec<Duration>>>,
}

impl VaultStaticRotator {
    async fn rotate(&mut self, marks: &RotationMarks) -> Result<(), BoxError> {
        let started = Instant::now();
        let sent = SystemTime::now();
        self.bao.rotate_static_role(&self.role).await?;
        let changed = Instant::now();
        marks.mark_since(sent);
        record(&self.log, RotationTimes { started, changed });
        self.took
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(changed - started);
        Ok(())
    }

    /// The rotations' note: how long rotate-role took.
    fn describe(took: &[Duration]) -> String {
        if took.is_empty() {
            return "no Vault rotation (database/rotate-role was not called)".to_owned();
        }
        let ms: Vec<f64> = took.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        format!(
            "Vault rotations (database/rotate-role, sent by the drill, not through the proxy): \
             {}, each took p50 {} ms, max {} ms (the database's password changed inside it, so \
             the old one was refused from some instant in it; convergence counts from its return)",
            ms.len(),
            cell(percentile(&ms, 0.5).map(|v| format!("{v:.0}"))),
            cell(percentile(&ms, 1.0).map(|v| format!("{v:.0}"))),
        )
    }
}

/// The fleet behind a load balancer: each request goes to the next instance in turn.
struct FleetWorkload {
    instances: Vec<Arc<dyn Workload>>,
    next: AtomicUsize,
}

#[async_trait]
impl Workload for FleetWorkload {
    async fn request(&self) -> Result<(), BoxError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.instances.len();
        self.instances[i].request().await
    }
}

/// What the observer saw of one instance.
#[derive(Debug, Clone, Default, PartialEq)]
struct InstanceTrace {
    /// The provider's generation at each change, from the first poll on.
    generations: Vec<(Instant, u64)>,
    /// The newest generation the database had accepted (a connection or a probe), at each
    /// change.
    proven: Vec<(Instant, u64)>,
    /// When a connection of each generation was first seen opened.
    first_open: BTreeMap<u64, Instant>,
    /// The provider's store calls so far, at each change. The first entry is the count at the
    /// first poll, not the time of a call: the instance's last call before it (at its build)
    /// came an unknown time earlier.
    calls: Vec<(Instant, u64)>,
}

impl InstanceTrace {
    fn observe(&mut self, now: Instant, generation: u64, opened: impl Iterator<Item = (u64, u64)>) {
        if self.generations.last().map(|(_, g)| *g) != Some(generation) {
            self.generations.push((now, generation));
        }
        for (g, n) in opened {
            if n > 0 {
                self.first_open.entry(g).or_insert(now);
            }
        }
    }

    fn observe_proven(&mut self, now: Instant, proven: u64) {
        if self.proven.last().map(|(_, g)| *g) != Some(proven) {
            self.proven.push((now, proven));
        }
    }

    /// When the database first accepted a newer credential from the instance (a connection of
    /// its pool or a probe) than the one it had when a rotation began at `began`.
    fn proven_after(&self, began: Instant) -> Option<Instant> {
        self.first_newer(&self.proven, began)
    }

    /// The first entry of `series` after `began` with a newer generation than the provider
    /// had at `began`.
    fn first_newer(&self, series: &[(Instant, u64)], began: Instant) -> Option<Instant> {
        let before = self.generation_at(began)?;
        series
            .iter()
            .find(|(t, g)| *t > began && *g > before)
            .map(|(t, _)| *t)
    }

    fn count_calls(&mut self, now: Instant, calls: u64) {
        if self.calls.last().map(|(_, c)| *c) != Some(calls) {
            self.calls.push((now, calls));
        }
    }

    /// The generation the provider had at `at` (its first one for an earlier instant).
    fn generation_at(&self, at: Instant) -> Option<u64> {
        self.generations
            .iter()
            .take_while(|(t, _)| *t <= at)
            .last()
            .or(self.generations.first())
            .map(|(_, g)| *g)
    }

    /// When the instance's provider first had a newer credential than the one it had when a
    /// rotation began at `began`.
    fn learned_after(&self, began: Instant) -> Option<Instant> {
        self.first_newer(&self.generations, began)
    }

    /// When the instance first opened a connection with a newer credential than the one it
    /// had when a rotation began at `began`.
    fn first_connect_after(&self, began: Instant) -> Option<Instant> {
        let before = self.generation_at(began)?;
        self.first_open.range(before + 1..).map(|(_, t)| *t).min()
    }
}

/// One instance's convergence for a rotation: from the store's change to its first connect with
/// the new credential (zero when that came first); `None` when it did not connect with it
/// before the observer stopped.
fn convergence(trace: &InstanceTrace, rotation: RotationTimes) -> Option<Duration> {
    trace
        .first_connect_after(rotation.started)
        .map(|t| t.saturating_duration_since(rotation.changed))
}

/// The `q` quantile of `values` (nearest rank); `None` when empty.
fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The fleet's counters at one poll.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CallSample {
    /// Since the start of the load.
    at: Duration,
    /// The providers' store calls, summed.
    calls: u64,
    /// The providers' failed fetches, summed.
    failures: u64,
}

/// The fleet's store calls at `t` (the last sample at or before it; the first before them all).
fn calls_at(samples: &[CallSample], t: Duration) -> u64 {
    // The samples come in time order.
    let after = samples.partition_point(|s| s.at <= t);
    samples.get(after.saturating_sub(1)).map_or(0, |s| s.calls)
}

/// The most store calls the fleet made in one second: over the 1-s windows that start at a
/// poll and touch no `busy` window (all of them when `busy` is empty). A store's rate quota
/// (Secrets Manager's is per account and region, per second) and a single Vault node meet the
/// fleet's calls a second at a time: a fleet whose refreshes fall in step asks for its whole
/// interval's calls in the same second. `None` without such a window.
fn peak_calls_per_s(samples: &[CallSample], busy: &[(Duration, Duration)]) -> Option<u64> {
    const SECOND: Duration = Duration::from_secs(1);
    let last = samples.last()?.at;
    samples
        .iter()
        .filter(|s| s.at + SECOND <= last)
        .filter(|s| !busy.iter().any(|(a, b)| s.at < *b && s.at + SECOND > *a))
        .map(|s| calls_at(samples, s.at + SECOND).saturating_sub(s.calls))
        .max()
}

/// One instance's steady store calls per second, over the fleet: the calls over the time
/// between each instance's consecutive calls, for the gaps that lie in `[from, to]` and touch
/// no `busy` window (pooled over the instances). Unlike a count of the calls in fixed windows,
/// it does not depend on where the instances' refresh phases fall (a fleet started at once
/// refreshes in step: a window then holds all of a refresh or none of it). `None` without a
/// second of such gaps.
///
/// A steady stretch of length `L` holds a whole gap of length `g` only when the gap happens to
/// start in its first `L - g`: short gaps fit more often than long ones, and counting only the
/// gaps that fit overstates the rate (by under 1 % for jittered 4.5–5 s refreshes in the 6 s
/// between a 15-s schedule's rotation windows, by 14 % for gaps of 3 s and 5 s). Each gap is
/// weighted by `L / (L - g)`, the inverse of that chance (capped at 20), as for
/// length-biased sampling.
fn steady_rate_per_instance(
    traces: &[InstanceTrace],
    from: Instant,
    to: Instant,
    busy: &[(Instant, Instant)],
) -> Option<f64> {
    let (mut calls, mut time, mut seen) = (0.0f64, 0.0f64, Duration::ZERO);
    for trace in traces {
        // From the first call seen on: the first entry is the first poll, which cuts a gap
        // short (counted, it made a fleet built over a few seconds read 1.14-1.20 calls per
        // refresh where the calls' own gaps read 1.05).
        for pair in trace.calls.get(1..).unwrap_or_default().windows(2) {
            let ((a, a_calls), (b, b_calls)) = (pair[0], pair[1]);
            if a < from || b > to || busy.iter().any(|(s, e)| a < *e && b > *s) {
                continue;
            }
            // The steady stretch the gap lies in.
            let start = busy
                .iter()
                .map(|(_, e)| *e)
                .filter(|e| *e <= a)
                .fold(from, Instant::max);
            let end = busy
                .iter()
                .map(|(s, _)| *s)
                .filter(|s| *s >= b)
                .fold(to, Instant::min);
            let (stretch, gap) = ((end - start).as_secs_f64(), (b - a).as_secs_f64());
            let weight = if stretch > gap {
                (stretch / (stretch - gap)).min(20.0)
            } else {
                20.0
            };
            calls += weight * b_calls.saturating_sub(a_calls) as f64;
            time += weight * gap;
            seen += b - a;
        }
    }
    (seen >= Duration::from_secs(1)).then(|| calls / time)
}

/// What one rotation cost the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct RotationResult {
    /// The store's change, seconds since the start of the load.
    pub at_s: f64,
    pub convergence_p50_ms: f64,
    pub convergence_p99_ms: f64,
    pub convergence_max_ms: f64,
    /// Instances that had not connected with the new credential when the observer stopped.
    pub not_converged: usize,
    /// The store's change until the instances' providers had the new credential (the part of
    /// the convergence that is the store's and the refresh schedule's): p50 and p99, ms.
    pub learned_p50_ms: Option<f64>,
    pub learned_p99_ms: Option<f64>,
    pub learned_max_ms: Option<f64>,
    /// The store's change until the database first accepted the new credential from each
    /// instance (its pool's connection or a probe): p50 and p99, ms. Between it and the
    /// convergence, the pool's first session of its own with it (its next connect).
    pub proven_p50_ms: Option<f64>,
    pub proven_p99_ms: Option<f64>,
    pub proven_max_ms: Option<f64>,
    /// Store calls in the rotation's window (its start to its store change + refresh + 2 s),
    /// per instance: the scheduled refreshes in it included.
    pub store_calls_per_instance: f64,
    /// Of those, the calls beyond the steady rate over the window, per instance (below zero
    /// when the instances' refreshes happened to fall outside the window).
    pub extra_store_calls_per_instance: Option<f64>,
    /// The most logins in any second of the rotation's window.
    pub peak_logins_per_s: Option<usize>,
}

/// One fleet run: an adapter and a strategy.
pub struct FleetRun {
    adapter: AdapterName,
    strategy: Strategy,
    source: SourceName,
    instances: usize,
    concurrency_per_instance: usize,
    think_time: Duration,
    refresh: Duration,
    jitter: f64,
    pace_per_pool: Option<u32>,
    rotate_every: Option<Duration>,
    store_throttle: f64,
    store_latency: Option<Duration>,
    report: ScenarioReport,
    rotations: Vec<RotationResult>,
    convergence_ms: Option<(f64, f64, f64)>,
    not_converged: usize,
    /// Instances not converged on a rotation whose store change came less than the bound
    /// before the end of the load (no request came to make them connect).
    not_converged_cut_off: usize,
    store_calls: u64,
    store_calls_throttled: u64,
    store_api_calls: Option<u64>,
    store_fetch_failures: u64,
    steady_per_instance_per_refresh: Option<f64>,
    per_instance_per_rotation: Option<f64>,
    peak_logins_per_s: Option<usize>,
    refused_logins: Option<usize>,
    /// The most store calls in a second: over the load, and outside the rotations' windows.
    peak_store_calls_per_s: Option<u64>,
    steady_peak_store_calls_per_s: Option<u64>,
    rotation_note: Option<String>,
    warmup_failures: usize,
    /// The observer's polls: how far apart on average and at most (it aims at [`POLL`]).
    poll_gaps_ms: (f64, f64),
    /// Store calls per second and logins per second, per bucket of [`Timeline::BUCKET`].
    store_calls_per_s: Vec<f64>,
    logins_per_s: Vec<f64>,
}

impl FleetRun {
    fn label(&self) -> String {
        format!("{} / {}", self.adapter.as_str(), self.strategy_label())
    }

    /// The strategy column: `dynamic` for a Vault dynamic role (a new user per lease).
    fn strategy_label(&self) -> &'static str {
        strategy_label(self.source, self.strategy)
    }

    /// Steady-state store calls per instance per minute.
    fn steady_per_instance_per_minute(&self) -> Option<f64> {
        self.steady_per_instance_per_refresh
            .map(|per_refresh| per_refresh * 60.0 / self.refresh.as_secs_f64())
    }

    /// Whether the run fails the drill: a failed request or a stale session.
    fn failed(&self) -> bool {
        self.report.requests_failed > 0 || self.report.stale_after_drain > 0
    }

    /// The issue's targets, each with whether it holds.
    fn targets(&self) -> Vec<(String, bool)> {
        let mut out = vec![
            (
                format!("failed requests {} = 0", self.report.requests_failed),
                self.report.requests_failed == 0,
            ),
            (
                format!("stale sessions {} = 0", self.report.stale_after_drain),
                self.report.stale_after_drain == 0,
            ),
        ];
        // A throttled store's refused calls are tried again: the call counts are reported, and
        // the issue judges only failures and convergence there.
        let throttled = self.store_throttle > 0.0;
        if let Some(steady) = self.steady_per_instance_per_refresh.filter(|_| !throttled) {
            out.push((
                format!("steady store calls {steady:.2} <= 1.1 per instance per refresh"),
                steady <= 1.1,
            ));
        }
        if let Some(per) = self.per_instance_per_rotation.filter(|_| !throttled) {
            out.push((
                format!("store calls {per:.2} <= 3 per instance per rotation (worst)"),
                per <= 3.0,
            ));
        }
        if let Some((_, p99, _)) = self.convergence_ms {
            let bound = convergence_bound(self.refresh, self.store_throttle).as_secs_f64() * 1000.0;
            let what = if self.store_throttle > 0.0 {
                "3 x refresh"
            } else {
                "refresh + 2 s"
            };
            out.push((
                format!("convergence p99 {p99:.0} ms <= {bound:.0} ms ({what})"),
                p99 <= bound && self.not_converged == 0,
            ));
        }
        out
    }
}

/// What every run of one drill shares.
struct Fleet<'a> {
    pg: &'a Arc<TestPostgres>,
    /// Where the instances read the credential: memory, aws or vault-static.
    source: SourceName,
    world: Option<&'a secrets_manager::World>,
    /// `--source vault-static`: the OpenBao server.
    vault: Option<&'a vault::World>,
    proxy: Option<&'a FaultProxy>,
    instances: usize,
    refresh: Duration,
    jitter: f64,
    store_throttle: f64,
    store_latency: Option<Duration>,
    config: ScenarioConfig,
    query: adapters::Query,
    /// `--connect-pace`: each pool's logins per second (deadpool, built here).
    pace_per_pool: Option<u32>,
    /// The request of the paced pools (the same as `query`'s).
    sql: Arc<str>,
}

pub async fn main(args: DrillArgs, instances: usize) -> ExitCode {
    let pool_size = usize::from(args.pool_size);
    let sessions = instances * pool_size;
    let max_connections = (sessions + sessions / 10 + SERVER_MARGIN).max(300);
    let pg = match &args.database_url {
        Some(url) => match TestPostgres::from_admin_url(url).await {
            Ok(pg) => {
                eprintln!(
                    "note: the fleet needs about {max_connections} sessions at the server \
                     (--fleet {instances} x --pool-size {pool_size} and a margin); its \
                     max_connections is not changed"
                );
                pg
            }
            Err(e) => {
                eprintln!("error: cannot use --database-url: {e}");
                return ExitCode::from(if e.is_invalid_url() { 2 } else { 1 });
            }
        },
        None => {
            eprintln!(
                "starting an embedded PostgreSQL (scram-sha-256, max_connections \
                 {max_connections})..."
            );
            let n = u32::try_from(max_connections).unwrap_or(u32::MAX);
            match TestPostgres::start_with_max_connections(n).await {
                Ok(pg) => pg,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let pg = Arc::new(pg);
    let world = match args.source {
        SourceName::Aws => {
            eprintln!("starting moto (AWS Secrets Manager)...");
            match secrets_manager::World::start(args.pause_before_finish).await {
                Ok(world) => {
                    eprintln!("moto at {}", world.endpoint_url());
                    Some(world)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let vault_world = match vault::Kind::from_source(args.source) {
        Some(kind) => match vault::World::start_for(&pg, kind, &args).await {
            Some(world) => Some(world),
            None => return ExitCode::FAILURE,
        },
        None => None,
    };
    let proxy = if args.fleet.needs_proxy() {
        let (started, store) = match (&world, &vault_world) {
            (Some(world), _) => (Some(world.fault_proxy().await), "moto"),
            (None, Some(vault)) => (Some(vault.fault_proxy().await), "OpenBao"),
            (None, None) => (None, "the store"),
        };
        match started {
            Some(Ok(proxy)) => {
                eprintln!(
                    "the fleet reaches {store} through a fault proxy at {}",
                    proxy.endpoint_url()
                );
                Some(proxy)
            }
            Some(Err(e)) => {
                eprintln!("error: the fault proxy: {e}");
                return ExitCode::FAILURE;
            }
            None => None,
        }
    } else {
        None
    };
    let refresh = args.fleet.refresh(args.rotate_every.interval());
    let fleet = Fleet {
        pg: &pg,
        source: args.source,
        world: world.as_ref(),
        vault: vault_world.as_ref(),
        proxy: proxy.as_ref(),
        instances,
        refresh,
        jitter: args.fleet.refresh_jitter,
        store_throttle: args.fleet.store_throttle,
        store_latency: args.fleet.store_latency,
        config: ScenarioConfig {
            duration: args.duration,
            rotate_every: args.rotate_every.interval(),
            concurrency: instances * usize::from(args.concurrency),
            pool_max_size: pool_size,
            drain_grace: convergence_bound(refresh, args.fleet.store_throttle),
            think_time: args.fleet.think(instances, args.concurrency),
            sample_every: FLEET_SAMPLE_EVERY,
            ..ScenarioConfig::default()
        },
        query: adapters::Query::new(args.query_ms),
        pace_per_pool: args.fleet.pace_per_pool(instances),
        sql: request_sql(args.query_ms).into(),
    };
    let mut adapters = args.adapter.clone();
    crate::drill::dedup(&mut adapters);
    let mut strategies: Vec<Strategy> = args.strategy.iter().map(|s| (*s).into()).collect();
    crate::drill::dedup(&mut strategies);
    match args.source {
        // A static role is one user whose password Vault changes: single user, whatever
        // --strategy says (it does not apply to Vault's sources).
        SourceName::VaultStatic => strategies = vec![Strategy::SingleUser],
        // A dynamic role: a new user per lease.
        SourceName::VaultDynamic => strategies = vec![Strategy::AlternatingUsers],
        _ => {}
    }

    let mut runs = Vec::new();
    let mut not_run = Vec::new();
    for &adapter in &adapters {
        for &strategy in &strategies {
            match run_one(&fleet, adapter, strategy).await {
                Ok(run) => runs.push(run),
                Err(e) => {
                    eprintln!("error: {} / {strategy} (fleet): {e}", adapter.as_str());
                    not_run.push(format!("{}/{strategy}", adapter.as_str()));
                }
            }
        }
    }

    println!();
    print!("{}", table(&runs, &fleet, &args));
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, json(&runs, pg.is_embedded())) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("results written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        if let Err(e) = std::fs::write(path, svg(&runs)) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("plot written to {}", path.display());
    }
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| r.failed())
        .map(FleetRun::label)
        .collect();
    if !not_run.is_empty() {
        eprintln!("FAILED: {} did not finish (see above)", not_run.join(", "));
    }
    if !failed.is_empty() {
        eprintln!(
            "FAILED: {} had failed requests or stale sessions after the drain",
            failed.join(", ")
        );
    }
    if failed.is_empty() && not_run.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The strategy column: `dynamic` for a Vault dynamic role (a new user per lease, whatever
/// `--strategy` says).
fn strategy_label(source: SourceName, strategy: Strategy) -> &'static str {
    match source {
        SourceName::VaultDynamic => vault::Kind::Dynamic.label(),
        _ => strategy.as_str(),
    }
}

/// Each instance's provider policy: the fleet's refresh interval (the default jitter), for
/// alternating users the overlap the store leaves (Secrets Manager: the previous user works
/// until the next rotation; memory: half an interval), and for a Vault dynamic role the
/// `grace` as its expiry margin (the provider fetches then, and the source issues the next
/// user).
fn fleet_policy(
    strategy: Strategy,
    source: SourceName,
    refresh: Duration,
    jitter: f64,
    rotate_every: Option<Duration>,
    grace: Duration,
) -> Result<Policy, credswap_core::PolicyError> {
    let mut builder = Policy::builder()
        .refresh_interval(refresh)
        .jitter(jitter)
        .backoff(
            Duration::from_millis(200),
            refresh.clamp(Duration::from_millis(200), Duration::from_secs(2)),
        );
    if source == SourceName::VaultDynamic {
        return builder.expiry_margin(grace).build();
    }
    if let (Strategy::AlternatingUsers, Some(every)) = (strategy, rotate_every) {
        builder = builder.overlap_window(match source {
            SourceName::Memory => every / 2,
            _ => every,
        });
    }
    builder.build()
}

/// `SELECT current_user`, with `--query-ms` on the server first (as `adapters::Query`).
fn request_sql(query_ms: u32) -> String {
    if query_ms == 0 {
        "SELECT current_user".to_owned()
    } else {
        format!(
            "SELECT current_user FROM pg_sleep({}.{:03})",
            query_ms / 1000,
            query_ms % 1000
        )
    }
}

/// How long a request of a paced pool may wait for a connection (as the drill's other pools).
const PACED_WAIT: Duration = Duration::from_secs(5);

/// `--connect-pace`: a credswap-deadpool instance as `adapters::build` makes one, with its
/// logins paced to `per_second`.
async fn paced_deadpool(
    pg: &TestPostgres,
    app: &App,
    policy: Policy,
    pool_size: usize,
    sql: Arc<str>,
    per_second: u32,
) -> Result<adapters::PoolUnderTest, BoxError> {
    let credentials = RotatingCredentials::new(Arc::clone(&app.source), policy).await?;
    let mut pool_config = deadpool_postgres::PoolConfig::new(pool_size);
    pool_config.timeouts = deadpool_postgres::Timeouts {
        wait: Some(PACED_WAIT),
        create: Some(PACED_WAIT),
        recycle: Some(PACED_WAIT),
    };
    let (pool, rotation) =
        credswap_deadpool::Builder::new(pg.base_config(), tokio_postgres::NoTls, credentials)
            .pool_config(pool_config)
            .max_connects_per_second(per_second)
            .build()?;
    let close_pool = pool.clone();
    let (stats, calls, provider) = (rotation.clone(), rotation.clone(), rotation.clone());
    let proven = adapters::proven_generation(rotation.credentials());
    Ok(adapters::PoolUnderTest {
        workload: Arc::new(PacedSelect(pool, sql)),
        generation: Arc::new(move || rotation.credentials().generation().get()),
        stats: Some(Arc::new(move || stats.stats())),
        store_calls: Arc::new(move || Some(calls.credentials().stats().store_calls)),
        provider_stats: Some(Arc::new(move || provider.credentials().stats())),
        proven: Some(proven),
        close: Box::new(move || close_pool.close()),
    })
}

/// The request through a paced deadpool pool.
struct PacedSelect(deadpool_postgres::Pool, Arc<str>);

#[async_trait]
impl Workload for PacedSelect {
    async fn request(&self) -> Result<(), BoxError> {
        let client = self.0.get().await?;
        let statement = client.prepare_cached(&self.1).await?;
        let row = client.query_one(&statement, &[]).await?;
        let _user: String = row.get(0);
        Ok(())
    }
}

/// One Vault source per instance, built by `build` from the address to read at (OpenBao's, or
/// the fault proxy's) and a token of the instance's own: each pod logs in for itself (a
/// dynamic role's leases are its token's), and each source has an HTTP client of its own.
async fn vault_sources(
    vault: &vault::World,
    proxy: Option<&FaultProxy>,
    n: usize,
    build: impl Fn(&str, String) -> Result<VaultSource, credswap_vault::BuildError>,
) -> Result<Vec<Arc<VaultSource>>, BoxError> {
    let address = proxy.map_or_else(|| vault.address(), FaultProxy::endpoint_url);
    let mut sources = Vec::with_capacity(n);
    for i in 0..n {
        let token = vault.instance_token(i).await?;
        sources.push(Arc::new(build(&address, token)?));
    }
    Ok(sources)
}

/// The instances' sources as the providers take them.
fn as_sources(sources: &[Arc<VaultSource>]) -> Vec<Arc<dyn CredentialSource>> {
    sources
        .iter()
        .map(|s| Arc::clone(s) as Arc<dyn CredentialSource>)
        .collect()
}

/// One instance's counters, for the observer.
struct Probe {
    /// The provider's generation (cheap: read at every poll).
    generation: Arc<dyn Fn() -> u64 + Send + Sync>,
    adapter: Arc<dyn Fn() -> AdapterStats + Send + Sync>,
    provider: Arc<dyn Fn() -> Stats + Send + Sync>,
    proven: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// The source's own count of its calls to the store, counted instead of the provider's
    /// fetches when those are not calls (a Vault dynamic role's source serves its lease from
    /// its cache between renewals).
    store_calls: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
}

/// Polls every instance every [`POLL`] until `stop`.
fn observe(
    probes: Vec<Probe>,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<InstanceTrace>, Vec<CallSample>)> {
    tokio::spawn(async move {
        let mut traces = vec![InstanceTrace::default(); probes.len()];
        let mut samples = Vec::new();
        let mut ticker = tokio::time::interval(POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = Instant::now();
            let (mut calls, mut failures) = (0u64, 0u64);
            for (probe, trace) in probes.iter().zip(&mut traces) {
                // The adapter's counters cost more than the generation: read only until the
                // instance has opened a connection with its current generation (a pending
                // credential's connection is seen when the provider publishes it, at once).
                let generation = (probe.generation)();
                if trace.first_open.range(generation..).next().is_none() {
                    trace.observe_proven(now, (probe.proven)());
                    let stats = (probe.adapter)();
                    trace.observe(
                        now,
                        stats.generation.get(),
                        stats
                            .opened_per_generation
                            .iter()
                            .map(|(g, n)| (g.get(), *n)),
                    );
                }
                let provider = (probe.provider)();
                let made = probe
                    .store_calls
                    .as_ref()
                    .map_or(provider.store_calls, |c| c());
                trace.count_calls(now, made);
                calls += made;
                failures += provider.fetch_failures;
            }
            samples.push(CallSample {
                at: now.saturating_duration_since(origin),
                calls,
                failures,
            });
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        (traces, samples)
    })
}

async fn run_one(
    fleet: &Fleet<'_>,
    adapter: AdapterName,
    strategy: Strategy,
) -> Result<FleetRun, BoxError> {
    let n = fleet.instances;
    let log: RotationTimesLog = Arc::default();
    let source_name = fleet.source;
    // The store, a source per instance, and the rotator.
    let mut memory_store = None;
    let mut api_calls: Option<ApiCalls> = None;
    let mut rotation_log = None;
    let mut vault_role = None;
    let vault_took: Arc<Mutex<Vec<Duration>>> = Arc::default();
    // `--source vault-dynamic`: the instances' sources, for the monitor and the note.
    let mut dynamic_sources: Option<Vec<Arc<VaultSource>>> = None;
    let (rotator, initials, sources) = match (fleet.world, fleet.vault) {
        (None, Some(vault)) if vault.kind() == vault::Kind::Dynamic => {
            let margin = dynamic::lease_margin(fleet.config.drain_grace, fleet.refresh);
            let lifetime = dynamic::lifetime(fleet.config.rotate_every, margin);
            let role = vault.fleet_dynamic_role(lifetime).await?;
            vault_role = Some(role.clone());
            let vault_sources = vault_sources(vault, fleet.proxy, n, |address, token| {
                vault::World::fleet_dynamic_source(&role, address, token, margin)
            })
            .await?;
            eprintln!(
                "{} / dynamic: issuing {n} users (a lease of {} each)...",
                adapter.as_str(),
                ms(lifetime)
            );
            let initials = dynamic::prefetch(&vault_sources).await?;
            let sources = as_sources(&vault_sources);
            let counted = vault_sources.clone();
            api_calls = Some(Box::new(move || {
                counted.iter().map(|s| dynamic::vault_calls(s)).sum()
            }));
            dynamic_sources = Some(vault_sources);
            (FleetRotator::VaultDynamic, initials, sources)
        }
        (None, Some(vault)) => {
            let (role, initial) = vault.fleet_static_role(fleet.pg).await?;
            vault_role = Some(role.clone());
            let vault_sources = vault_sources(vault, fleet.proxy, n, |address, token| {
                vault::World::fleet_static_source(&role, address, token)
            })
            .await?;
            let sources = as_sources(&vault_sources);
            api_calls = Some(Box::new(move || {
                vault_sources.iter().map(|s| s.stats().reads).sum()
            }));
            let rotator = FleetRotator::VaultStatic(VaultStaticRotator {
                bao: vault.bao(),
                role,
                log: Arc::clone(&log),
                took: Arc::clone(&vault_took),
            });
            (rotator, vec![initial; n], sources)
        }
        (None, None) => {
            let setup = RotationSetup::create(fleet.pg, strategy).await?;
            let store = setup.store().clone();
            let initial = setup.initial_credential().clone();
            let sources: Vec<Arc<dyn CredentialSource>> = (0..n)
                .map(|_| Arc::new(store.clone()) as Arc<dyn CredentialSource>)
                .collect();
            let every = fleet.config.rotate_every.unwrap_or(Duration::from_secs(15));
            let rotator = FleetRotator::Memory(MemoryFleetRotator {
                pg: Arc::clone(fleet.pg),
                strategy,
                roles: setup.roles().to_vec(),
                store: store.clone(),
                overlap: every / 2,
                active: 0,
                log: Arc::clone(&log),
            });
            memory_store = Some(store);
            (rotator, vec![initial; n], sources)
        }
        (Some(world), _) => {
            let (app, rotator) = world
                .prepare(fleet.pg, strategy, ScenarioName::Normal, &fleet.config)
                .await?;
            let mut api_sources: Vec<Arc<SecretsManagerSource>> = Vec::with_capacity(n);
            let secret_id = rotator.secret_id().to_owned();
            for i in 0..n {
                let mut config = secretsmanager::config::Builder::from(world.sdk_config())
                    // Each instance's retries are its own, as each pod's are.
                    .retry_partition(RetryPartition::new(format!("credswap-fleet-{i}")));
                if let Some(proxy) = fleet.proxy {
                    config = config.endpoint_url(proxy.endpoint_url());
                }
                let client = Client::from_conf(config.build());
                let source = SecretsManagerSource::builder(secret_id.clone())
                    .client(client)
                    .build()?;
                api_sources.push(Arc::new(source));
            }
            let sources = api_sources
                .iter()
                .map(|s| Arc::clone(s) as Arc<dyn CredentialSource>)
                .collect();
            api_calls = Some(Box::new(move || secrets_manager_calls(&api_sources)));
            rotation_log = Some(rotator.log());
            let rotator = FleetRotator::Aws(Box::new(rotator), Arc::clone(&log));
            (rotator, vec![app.initial; n], sources)
        }
    };
    let roles = rotator.roles();
    let policy = fleet_policy(
        strategy,
        source_name,
        fleet.refresh,
        fleet.jitter,
        fleet.config.rotate_every,
        fleet.config.drain_grace,
    )?;
    let strategy_label = strategy_label(source_name, strategy);
    eprintln!(
        "{} / {strategy_label}: building {n} instances (a provider and a pool of {} each)...",
        adapter.as_str(),
        fleet.config.pool_max_size
    );
    let mut pools = Vec::with_capacity(n);
    for (i, (source, initial)) in sources.into_iter().zip(initials).enumerate() {
        let app = App { source, initial };
        let pool = match fleet.pace_per_pool {
            Some(per_second) => {
                paced_deadpool(
                    fleet.pg,
                    &app,
                    policy,
                    fleet.config.pool_max_size,
                    Arc::clone(&fleet.sql),
                    per_second,
                )
                .await
            }
            None => {
                adapters::build(
                    adapter,
                    fleet.pg,
                    &app,
                    policy,
                    fleet.config.pool_max_size,
                    fleet.query.clone(),
                )
                .await
            }
        }
        .map_err(|e| format!("building instance {i}: {e}"))?;
        pools.push(pool);
    }
    // Warm-up: every pool opens its sessions before the load, so that the run's logins are the
    // rotations' (and the steady state's), not the fleet's start.
    // Each pool's requests at once (so that it opens all its sessions), WARMUP_POOLS pools at
    // a time: hundreds of logins at once would outlast the pools' 5-s connect timeout here.
    let mut warmup = tokio::task::JoinSet::new();
    let turns = Arc::new(tokio::sync::Semaphore::new(WARMUP_POOLS));
    for pool in &pools {
        let workload = Arc::clone(&pool.workload);
        let turns = Arc::clone(&turns);
        let size = fleet.config.pool_max_size;
        warmup.spawn(async move {
            let _turn = turns.acquire_owned().await;
            let mut requests = tokio::task::JoinSet::new();
            for _ in 0..size {
                let workload = Arc::clone(&workload);
                requests.spawn(async move { workload.request().await });
            }
            let mut failed = 0usize;
            while let Some(done) = requests.join_next().await {
                if !matches!(done, Ok(Ok(()))) {
                    failed += 1;
                }
            }
            failed
        });
    }
    let mut warmup_failures = 0;
    while let Some(done) = warmup.join_next().await {
        warmup_failures += done.unwrap_or(1);
    }
    let mut probes = Vec::with_capacity(n);
    for (i, pool) in pools.iter().enumerate() {
        let store_calls = dynamic_sources.as_ref().map(|sources| {
            let source = Arc::clone(&sources[i]);
            Arc::new(move || dynamic::vault_calls(&source)) as Arc<dyn Fn() -> u64 + Send + Sync>
        });
        match (&pool.stats, &pool.provider_stats, &pool.proven) {
            (Some(adapter), Some(provider), Some(proven)) => probes.push(Probe {
                generation: Arc::clone(&pool.generation),
                adapter: Arc::clone(adapter),
                provider: Arc::clone(provider),
                proven: Arc::clone(proven),
                store_calls,
            }),
            _ => return Err(format!("{} has no provider to observe", adapter.as_str()).into()),
        }
    }
    let generations: Vec<_> = pools.iter().map(|p| Arc::clone(&p.generation)).collect();
    let workload = Arc::new(FleetWorkload {
        instances: pools.iter().map(|p| Arc::clone(&p.workload)).collect(),
        next: AtomicUsize::new(0),
    });

    // The store's faults, for the load only.
    if let Some(proxy) = fleet.proxy {
        proxy.throttle(fleet.store_throttle);
        proxy.latency(fleet.store_latency.unwrap_or_default());
    }
    if let Some(store) = &memory_store {
        store.throttle(fleet.store_throttle);
        store.set_delay(fleet.store_latency.unwrap_or_default());
    }
    let throttled_before = fleet.proxy.map(|p| p.stats().throttled);
    let api_before = api_calls.as_ref().map(|calls| calls());
    let dynamic_role = vault_role.clone().filter(|_| dynamic_sources.is_some());
    // A dynamic role's users are this run's: none was refused before it.
    let refused_before = match &dynamic_role {
        Some(_) => Some(0),
        None => refused_logins(fleet.pg, &roles),
    };
    let monitor = match (&dynamic_sources, &dynamic_role) {
        (Some(sources), Some(role)) => {
            let role = role.clone();
            Some(
                dynamic::Monitor::start(
                    fleet.pg,
                    sources.clone(),
                    fleet.config.drain_grace,
                    dynamic::lease_margin(fleet.config.drain_grace, fleet.refresh),
                    move |name| vault::is_app_user(vault::Kind::Dynamic, &role, name),
                )
                .await?,
            )
        }
        _ => None,
    };
    // Vault ends the dynamic role's leases itself: the engine runs the workers only.
    let engine_config = ScenarioConfig {
        rotate_every: fleet
            .config
            .rotate_every
            .filter(|_| dynamic_sources.is_none()),
        ..fleet.config.clone()
    };

    let progress = Arc::new(Progress::default());
    let label = format!("{} / {strategy_label} x{n}", adapter.as_str());
    let display = ProgressDisplay::start(
        label,
        fleet.config.duration,
        Arc::clone(&progress),
        Arc::new(move || generations.iter().map(|g| g()).min().unwrap_or(0)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    let origin_wall = SystemTime::now();
    let observer = observe(probes, origin, Arc::clone(&stop));
    let result = scenario::run_with(fleet.pg, rotator, workload, &engine_config, progress).await;
    stop.store(true, Ordering::Relaxed);
    let end = Instant::now();
    let (traces, samples) = observer
        .await
        .map_err(|e| format!("the observer task failed: {e}"))?;
    let seen = match monitor {
        Some(monitor) => Some(monitor.finish().await?),
        None => None,
    };
    display.finish(result.as_ref().ok());
    if let Some(proxy) = fleet.proxy {
        proxy.throttle(0.0);
        proxy.latency(Duration::ZERO);
    }
    if let Some(store) = &memory_store {
        store.throttle(0.0);
        store.set_delay(Duration::ZERO);
    }
    let throttled = fleet
        .proxy
        .zip(throttled_before)
        .map(|(p, before)| p.stats().throttled - before);
    let store_api_calls = api_calls
        .as_ref()
        .zip(api_before)
        .map(|(calls, before)| calls() - before);
    for pool in pools {
        (pool.close)();
    }
    // Let the sessions end, and the server's log have the run's last lines.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The refusals before Vault drops the dynamic users (its revocation logs none, but read first).
    let refused_after = match &dynamic_role {
        Some(role) => fleet
            .pg
            .refused_logins_where(|name| vault::is_app_user(vault::Kind::Dynamic, role, name)),
        None => refused_logins(fleet.pg, &roles),
    };
    if let (Some(vault), Some(role)) = (fleet.vault, &vault_role) {
        if let Some(sources) = &dynamic_sources {
            dynamic::revoke(sources).await;
            vault.drop_dynamic_role(role).await;
        } else {
            vault.drop_static_role(role).await;
        }
    }
    let mut report = result?;

    // Rotations: convergence, store calls, logins. A dynamic role's are the waves of the
    // instances' own changes.
    let (waves, waves_before_load) = match &dynamic_sources {
        Some(_) => dynamic::waves(&traces, origin + fleet.config.duration),
        None => (Vec::new(), 0),
    };
    let rotations: Vec<RotationTimes> = match &dynamic_sources {
        Some(_) => waves.iter().map(|w| w.times).collect(),
        None => log.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    };
    let since = |t: Instant| t.saturating_duration_since(origin);
    let window = |r: &RotationTimes| (since(r.started), since(r.changed) + fleet.refresh + SETTLE);
    let busy: Vec<(Instant, Instant)> = rotations
        .iter()
        .map(|r| (r.started, r.changed + fleet.refresh + SETTLE))
        .collect();
    let steady_per_instance = match &dynamic_sources {
        // A lease's calls are not periodic (its issue, its renewal): no gaps to measure.
        Some(_) => dynamic::steady_rate(
            &samples,
            fleet.config.duration,
            &rotations.iter().map(window).collect::<Vec<_>>(),
            n,
        ),
        None => steady_rate_per_instance(&traces, origin, origin + fleet.config.duration, &busy),
    };
    let wall = |d: Duration| origin_wall + d;
    let logins: Option<Vec<SystemTime>> = match &dynamic_role {
        Some(role) => fleet
            .pg
            .logins_where(|name| vault::is_app_user(vault::Kind::Dynamic, role, name)),
        None => roles
            .iter()
            .map(|role| fleet.pg.logins(role))
            .collect::<Option<Vec<_>>>()
            .map(|per_role| per_role.into_iter().flatten().collect()),
    };
    let logins_between = |from: Duration, to: Duration| -> Option<Vec<SystemTime>> {
        logins.as_ref().map(|all| {
            all.iter()
                .copied()
                .filter(|t| *t >= wall(from) && *t <= wall(to))
                .collect()
        })
    };
    let run_span = since(end);
    let mut all_convergence = Vec::new();
    let mut not_converged = 0;
    let mut cut_off = 0;
    let mut results = Vec::new();
    for (w, rotation) in rotations.iter().enumerate() {
        // Each instance's rotation: the fleet's, or (a dynamic role's wave) from when its lease
        // was due for replacement (its "store change"), the generation before its own change.
        let own = |i: usize| -> Option<RotationTimes> {
            match (waves.get(w), &seen) {
                (Some(wave), Some(seen)) => wave.changed[i].map(|at| RotationTimes {
                    started: at.checked_sub(Duration::from_micros(1)).unwrap_or(at),
                    changed: seen.due_before(i, at),
                }),
                _ => Some(*rotation),
            }
        };
        let since_change = |i: usize, at: Option<Instant>| -> Option<f64> {
            let r = own(i)?;
            at.map(|t| t.saturating_duration_since(r.changed).as_secs_f64() * 1000.0)
        };
        let learned: Vec<f64> = (0..traces.len())
            .filter_map(|i| since_change(i, traces[i].learned_after(own(i)?.started)))
            .collect();
        let proven: Vec<f64> = (0..traces.len())
            .filter_map(|i| since_change(i, traces[i].proven_after(own(i)?.started)))
            .collect();
        let mut took_ms = Vec::with_capacity(traces.len());
        let mut missing = 0;
        for (i, trace) in traces.iter().enumerate() {
            match own(i).and_then(|r| convergence(trace, r)) {
                Some(d) => took_ms.push(d.as_secs_f64() * 1000.0),
                None => {
                    missing += 1;
                    let until_end = end.saturating_duration_since(rotation.changed);
                    took_ms.push(until_end.as_secs_f64() * 1000.0);
                }
            }
        }
        let (from, to) = window(rotation);
        let to = to.min(run_span);
        let calls = calls_at(&samples, to).saturating_sub(calls_at(&samples, from)) as f64;
        let extra = steady_per_instance
            .map(|rate| calls / n as f64 - rate * to.saturating_sub(from).as_secs_f64());
        results.push(RotationResult {
            at_s: round2(since(rotation.changed).as_secs_f64()),
            convergence_p50_ms: round2(percentile(&took_ms, 0.5).unwrap_or(0.0)),
            convergence_p99_ms: round2(percentile(&took_ms, 0.99).unwrap_or(0.0)),
            convergence_max_ms: round2(took_ms.iter().copied().fold(0.0, f64::max)),
            not_converged: missing,
            learned_p50_ms: percentile(&learned, 0.5).map(round2),
            learned_p99_ms: percentile(&learned, 0.99).map(round2),
            learned_max_ms: percentile(&learned, 1.0).map(round2),
            proven_p50_ms: percentile(&proven, 0.5).map(round2),
            proven_p99_ms: percentile(&proven, 0.99).map(round2),
            proven_max_ms: percentile(&proven, 1.0).map(round2),
            store_calls_per_instance: round2(calls / n as f64),
            extra_store_calls_per_instance: extra.map(round2),
            peak_logins_per_s: logins_between(from, to)
                .map(|t| most_in_any(&t, Duration::from_secs(1))),
        });
        // An instance that had not connected when the load ended counts against the fleet only
        // when the load went on for the whole bound after the store's change.
        if rotation.changed + fleet.config.drain_grace <= origin + fleet.config.duration {
            not_converged += missing;
        } else {
            cut_off += missing;
        }
        all_convergence.extend(took_ms);
    }
    let convergence_ms = percentile(&all_convergence, 0.5).map(|p50| {
        (
            round2(p50),
            round2(percentile(&all_convergence, 0.99).unwrap_or(0.0)),
            round2(all_convergence.iter().copied().fold(0.0, f64::max)),
        )
    });
    let first = samples.first().copied();
    let last = samples.last().copied();
    let (store_calls, fetch_failures) = match (first, last) {
        (Some(a), Some(b)) => (b.calls - a.calls, b.failures - a.failures),
        _ => (0, 0),
    };
    let bucket = Timeline::BUCKET;
    let buckets = report.timeline.ok.len();
    let store_calls_per_s = (0..buckets)
        .map(|i| {
            let (a, b) = (bucket * i as u32, bucket * (i as u32 + 1));
            calls_at(&samples, b).saturating_sub(calls_at(&samples, a)) as f64
                / bucket.as_secs_f64()
        })
        .collect();
    let logins_in_run = logins_between(Duration::ZERO, fleet.config.duration);
    let logins_per_s = match &logins_in_run {
        Some(times) => {
            let mut per = vec![0.0; buckets];
            for t in times {
                let offset = t.duration_since(origin_wall).unwrap_or_default();
                let i = (offset.as_micros() / bucket.as_micros()) as usize;
                if let Some(slot) = per.get_mut(i) {
                    *slot += 1.0 / bucket.as_secs_f64();
                }
            }
            per
        }
        None => Vec::new(),
    };
    if let Some(seen) = &seen {
        report.rotations = rotations.len() as u64;
        report.stale_after_drain = seen.stale;
        report.peak_backends = seen.peak;
        report.max_drain_ms = seen.max_drain.as_secs_f64() * 1000.0;
    }
    Ok(FleetRun {
        adapter,
        strategy,
        source: source_name,
        instances: n,
        concurrency_per_instance: fleet.config.concurrency / n.max(1),
        think_time: fleet.config.think_time,
        refresh: fleet.refresh,
        jitter: fleet.jitter,
        pace_per_pool: fleet.pace_per_pool,
        rotate_every: fleet.config.rotate_every,
        store_throttle: fleet.store_throttle,
        store_latency: fleet.store_latency,
        rotations: results.clone(),
        convergence_ms,
        not_converged,
        not_converged_cut_off: cut_off,
        store_calls,
        store_calls_throttled: throttled.unwrap_or(if memory_store.is_some() {
            fetch_failures
        } else {
            0
        }),
        store_api_calls,
        store_fetch_failures: fetch_failures,
        steady_per_instance_per_refresh: steady_per_instance
            .map(|rate| round2(rate * fleet.refresh.as_secs_f64())),
        per_instance_per_rotation: results
            .iter()
            .map(|r| r.store_calls_per_instance)
            .reduce(f64::max),
        peak_logins_per_s: logins_in_run.map(|t| most_in_any(&t, Duration::from_secs(1))),
        peak_store_calls_per_s: peak_calls_per_s(&samples, &[]),
        steady_peak_store_calls_per_s: peak_calls_per_s(
            &samples,
            &rotations.iter().map(window).collect::<Vec<_>>(),
        ),
        refused_logins: match (refused_before, refused_after) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        },
        rotation_note: match (rotation_log, &vault_role) {
            (Some(log), _) => Some(log.lock().unwrap_or_else(|p| p.into_inner()).describe()),
            (None, Some(_)) if dynamic_sources.is_some() => {
                let sources = dynamic_sources.as_deref().unwrap_or_default();
                seen.as_ref()
                    .map(|seen| dynamic::note(sources, seen, waves_before_load))
            }
            (None, Some(_)) => Some(VaultStaticRotator::describe(
                &vault_took.lock().unwrap_or_else(|p| p.into_inner()),
            )),
            (None, None) => None,
        },
        warmup_failures,
        poll_gaps_ms: poll_gaps(&samples),
        store_calls_per_s,
        logins_per_s,
        report,
    })
}

/// The mean and the longest gap between the observer's polls, ms.
fn poll_gaps(samples: &[CallSample]) -> (f64, f64) {
    let gaps: Vec<f64> = samples
        .windows(2)
        .map(|w| (w[1].at.saturating_sub(w[0].at)).as_secs_f64() * 1000.0)
        .collect();
    if gaps.is_empty() {
        return (0.0, 0.0);
    }
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    (
        round2(mean),
        round2(gaps.iter().copied().fold(0.0, f64::max)),
    )
}

/// The store's own API calls of the fleet so far (`--source aws`: DescribeSecret and
/// GetSecretValue; `--source vault-static`: Vault reads; `--source vault-dynamic`: every call
/// to Vault).
type ApiCalls = Box<dyn Fn() -> u64 + Send + Sync>;

/// The Secrets Manager API calls of `sources` so far: DescribeSecret and GetSecretValue.
fn secrets_manager_calls(sources: &[Arc<SecretsManagerSource>]) -> u64 {
    sources
        .iter()
        .map(|s| {
            let stats = s.stats();
            stats.describe_calls + stats.get_calls
        })
        .sum()
}

/// Refused logins of `roles` so far (`None` when the server's log is not readable here).
fn refused_logins(pg: &TestPostgres, roles: &[String]) -> Option<usize> {
    roles.iter().map(|role| pg.refused_logins(role)).sum()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn ms(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

fn cell<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The fleet's table, each rotation's line, the notes and the issue's targets.
fn table(runs: &[FleetRun], fleet: &Fleet<'_>, args: &DrillArgs) -> String {
    let c = fleet.config.concurrency / fleet.instances.max(1);
    let source = match args.source {
        SourceName::Aws => {
            "AWS Secrets Manager (moto), rotated by credswap-rotate (single user pauses before \
             finishSecret)"
        }
        SourceName::VaultStatic => {
            "OpenBao static role (bao server -dev; each instance its own token and HTTP client), \
             rotated by Vault on the drill's call to database/rotate-role (single user: the old \
             password stops working at once)"
        }
        SourceName::VaultDynamic => {
            "OpenBao dynamic role (bao server -dev; each instance its own token, HTTP client, \
             lease and user): each instance's source issues its next user at its first fetch \
             within the drain grace + a refresh interval of its lease's end, which is \
             --rotate-every + that margin after the issue (a rotation is the fleet's wave of \
             them; Vault drops the old user at the end)"
        }
        _ => "in-memory store, rotated by the drill",
    };
    let mut out = format!(
        "fleet of {} instances, pool max_size {} each, {c} worker(s) per instance ({} in all, \
         each pausing {} between requests), refresh every {} (jitter {:.0}%), {}, {}s per run; \
         source: {source}\n",
        fleet.instances,
        fleet.config.pool_max_size,
        fleet.config.concurrency,
        ms(fleet.config.think_time),
        ms(fleet.refresh),
        fleet.jitter * 100.0,
        fleet.config.rotate_every.map_or_else(
            || "rotation off".to_owned(),
            |d| format!("rotation every {}", ms(d))
        ),
        fleet.config.duration.as_secs_f64(),
    );
    if let Some(per_pool) = fleet.pace_per_pool {
        out.push_str(&format!(
            "connect pacing: {per_pool} login(s)/s per pool, at most {} a second over the fleet\n",
            u64::from(per_pool) * fleet.instances as u64
        ));
    }
    if fleet.store_throttle > 0.0 || fleet.store_latency.is_some() {
        out.push_str(&format!(
            "store faults: {:.0}% of the fleet's calls throttled, latency {}\n",
            fleet.store_throttle * 100.0,
            fleet.store_latency.map_or_else(|| "none".to_owned(), ms)
        ));
    }
    out.push('\n');
    let header = [
        "adapter",
        "strategy",
        "rot",
        "ok",
        "failed",
        "stale",
        "conv p50 ms",
        "conv p99 ms",
        "conv max ms",
        "store calls",
        "steady/inst/refresh",
        "steady/inst/min",
        "/inst/rotation",
        "throttled",
        "peak logins/s",
        "refused",
        "peak be",
    ];
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let p = &r.report;
            vec![
                r.adapter.as_str().to_owned(),
                r.strategy_label().to_owned(),
                p.rotations.to_string(),
                p.requests_ok.to_string(),
                p.requests_failed.to_string(),
                p.stale_after_drain.to_string(),
                cell(r.convergence_ms.map(|c| format!("{:.0}", c.0))),
                cell(r.convergence_ms.map(|c| format!("{:.0}", c.1))),
                cell(r.convergence_ms.map(|c| format!("{:.0}", c.2))),
                r.store_calls.to_string(),
                cell(r.steady_per_instance_per_refresh.map(|v| format!("{v:.2}"))),
                cell(
                    r.steady_per_instance_per_minute()
                        .map(|v| format!("{v:.1}")),
                ),
                cell(r.per_instance_per_rotation.map(|v| format!("{v:.2}"))),
                r.store_calls_throttled.to_string(),
                cell(r.peak_logins_per_s),
                cell(r.refused_logins),
                format!("{}/{}", p.peak_backends, r.instances * p.pool_max_size),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&table_line(&header, &widths));
    out.push_str(&table_line(&rule, &widths));
    for row in &rows {
        out.push_str(&table_line(row, &widths));
    }
    for r in runs {
        out.push('\n');
        let _ = writeln!(out, "{}:", r.label());
        for (i, rot) in r.rotations.iter().enumerate() {
            let _ = writeln!(
                out,
                "  rotation {} (store changed at {:.1}s): converged p50 {:.0} ms, p99 {:.0} ms, \
                 max {:.0} ms{} (the providers had it: p50 {} ms, p99 {} ms, max {} ms; the database accepted it: p50 {} ms, p99 {} ms, max {} ms); store calls {:.2} per instance in its window ({} beyond the \
                 steady rate); peak {} logins/s",
                i + 1,
                rot.at_s,
                rot.convergence_p50_ms,
                rot.convergence_p99_ms,
                rot.convergence_max_ms,
                if rot.not_converged > 0 {
                    format!(
                        " ({} of {} instances never connected with it)",
                        rot.not_converged, r.instances
                    )
                } else {
                    String::new()
                },
                cell(rot.learned_p50_ms.map(|v| format!("{v:.0}"))),
                cell(rot.learned_p99_ms.map(|v| format!("{v:.0}"))),
                cell(rot.learned_max_ms.map(|v| format!("{v:.0}"))),
                cell(rot.proven_p50_ms.map(|v| format!("{v:.0}"))),
                cell(rot.proven_p99_ms.map(|v| format!("{v:.0}"))),
                cell(rot.proven_max_ms.map(|v| format!("{v:.0}"))),
                rot.store_calls_per_instance,
                cell(
                    rot.extra_store_calls_per_instance
                        .map(|v| format!("{v:.2}"))
                ),
                cell(rot.peak_logins_per_s),
            );
        }
        match (r.source, r.store_api_calls) {
            (SourceName::Aws, Some(api)) => {
                let _ = writeln!(
                    out,
                    "  Secrets Manager API calls {api} (DescribeSecret per fetch, GetSecretValue \
                     when the version changed); fetches that failed after the SDK's retries {}",
                    r.store_fetch_failures
                );
            }
            (SourceName::VaultStatic, Some(api)) => {
                let _ = writeln!(
                    out,
                    "  Vault reads {api} (database/static-creds: one per fetch; the source does \
                     not retry, so a 429 fails the fetch and the provider backs off); fetches \
                     that failed {}",
                    r.store_fetch_failures
                );
            }
            (SourceName::VaultDynamic, Some(api)) => {
                let _ = writeln!(
                    out,
                    "  Vault calls {api} (the store calls of this source: database/creds, each a \
                     new user; lease renewals and lookups; the providers' fetches between them \
                     are served from the sources' caches); fetches that failed {}",
                    r.store_fetch_failures
                );
            }
            _ => {}
        }
        if let Some(peak) = r.peak_store_calls_per_s {
            let _ = writeln!(
                out,
                "  store calls in one second: at most {peak}, {} outside the rotations' windows \
                 (the steady rate spread evenly: {} a second)",
                cell(r.steady_peak_store_calls_per_s),
                cell(r.steady_per_instance_per_refresh.map(|per_refresh| format!(
                    "{:.0}",
                    per_refresh * r.instances as f64 / r.refresh.as_secs_f64()
                ))),
            );
        }
        if r.not_converged_cut_off > 0 {
            let _ = writeln!(
                out,
                "  {} instance(s) had not connected with a rotation's credential when the load \
                 ended less than the convergence bound after it (not judged)",
                r.not_converged_cut_off
            );
        }
        let _ = writeln!(
            out,
            "  observer: polled every {:.0} ms on average, at most {:.0} ms apart (first \
             connects are seen up to that late)",
            r.poll_gaps_ms.0, r.poll_gaps_ms.1
        );
        if let Some(note) = &r.rotation_note {
            let _ = writeln!(out, "  {note}");
        }
        if r.warmup_failures > 0 {
            let _ = writeln!(
                out,
                "  warm-up: {} of the first requests failed (before the load; not counted)",
                r.warmup_failures
            );
        }
        if !r.report.first_errors.is_empty() {
            let _ = writeln!(out, "  errors: {}", r.report.first_errors.join(" | "));
        }
        let targets = r.targets();
        let _ = writeln!(
            out,
            "  targets (issue 21): {}",
            targets
                .iter()
                .map(|(what, ok)| format!("{what} {}", if *ok { "ok" } else { "MISSED" }))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    out.push_str(
        "\nconv: from the store's change until an instance's first connect with the new \
         credential (polled every 20 ms; 0 when a pending credential came first), over every \
         instance of every rotation; store calls: the providers' fetches while the load ran \
         (steady: an instance's calls over the time between its calls, outside the rotations' \
         windows, which last from a rotation's start until refresh + 2 s after the store's \
         change; /inst/rotation: the calls in the worst rotation's window, its scheduled \
         refreshes included); \
         throttled: calls answered with the store's throttling error; peak logins/s and \
         refused: the server's log while the load ran (the rotator's own logins included); \
         stale: sessions of a rotated-away credential open refresh + 2 s (3 x refresh with \
         --store-throttle) after the store's \
         change; peak be: the most sessions of the fleet at once, of N x max_size\n",
    );
    if fleet.source == SourceName::VaultDynamic {
        out.push_str(
            "vault-dynamic: a rotation is a wave of the instances' new users (each instance's \
             k-th); an instance's store change is when its lease entered the margin in which a \
             fetch issues its next user, and its stale sessions are its old user's still open \
             the grace after it moved on; store calls are the sources' calls to Vault\n",
        );
    }
    out
}

/// One line of the table: the first two columns to the left, the rest to the right.
fn table_line(cells: &[String], widths: &[usize]) -> String {
    let mut text = String::new();
    for (i, (cell, w)) in cells.iter().zip(widths.iter().copied()).enumerate() {
        if i < 2 {
            let _ = write!(text, "{cell:<w$}  ");
        } else {
            let _ = write!(text, "{cell:>w$}  ");
        }
    }
    text.trim_end().to_owned() + "\n"
}

#[derive(Serialize)]
struct JsonFile<'a> {
    postgres: &'static str,
    runs: Vec<JsonRun<'a>>,
}

/// A fleet run in the JSON file.
#[derive(Serialize)]
struct JsonRun<'a> {
    adapter: &'static str,
    strategy: &'static str,
    source: &'static str,
    /// Always `true`: a fleet run.
    fleet: bool,
    instances: usize,
    pool_max_size: usize,
    concurrency_per_instance: usize,
    think_time_ms: u64,
    duration_s: f64,
    refresh_interval_ms: u64,
    refresh_jitter: f64,
    /// `--connect-pace`: each pool's logins per second (`null`: not paced).
    connect_pace_per_pool: Option<u32>,
    rotate_every_ms: Option<u64>,
    store_throttle: f64,
    store_latency_ms: Option<u64>,
    rotations: u64,
    requests_ok: u64,
    requests_failed: u64,
    throughput_rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_backends: usize,
    stale_after_drain: usize,
    /// `null` without rotations.
    convergence_p50_ms: Option<f64>,
    convergence_p99_ms: Option<f64>,
    convergence_max_ms: Option<f64>,
    not_converged: usize,
    not_converged_cut_off: usize,
    store_calls: u64,
    store_calls_throttled: u64,
    /// `--source aws`: DescribeSecret and GetSecretValue calls; `--source vault-static`: Vault
    /// reads (`database/static-creds`); `--source vault-dynamic`: every call to Vault (reads of
    /// `database/creds`, lease renewals and lookups; also its `store_calls`); `null` for
    /// memory.
    store_api_calls: Option<u64>,
    store_fetch_failures: u64,
    /// `null` without a stretch of the run outside the rotations' windows.
    steady_store_calls_per_instance_per_refresh: Option<f64>,
    steady_store_calls_per_instance_per_minute: Option<f64>,
    /// The calls in the worst rotation's window per instance, its scheduled refreshes
    /// included; `null` without rotations.
    store_calls_per_instance_per_rotation: Option<f64>,
    /// `null` for a server the drill did not start (its log is not readable).
    peak_logins_per_s: Option<usize>,
    refused_logins: Option<usize>,
    /// The most store calls the fleet made in one second while the load ran (a window from
    /// each poll), and the most outside the rotations' windows (`null` without such a second).
    peak_store_calls_per_s: Option<u64>,
    steady_peak_store_calls_per_s: Option<u64>,
    per_rotation: &'a [RotationResult],
    /// The observer's mean and longest gap between polls, ms.
    poll_mean_ms: f64,
    poll_max_ms: f64,
}

/// The JSON file: `{"postgres": "embedded"|"external", "runs": [...]}`, a run per adapter and
/// strategy, each with the fleet's fields.
fn json(runs: &[FleetRun], embedded: bool) -> String {
    let file = JsonFile {
        postgres: if embedded { "embedded" } else { "external" },
        runs: runs
            .iter()
            .map(|r| {
                let p = &r.report;
                JsonRun {
                    adapter: r.adapter.as_str(),
                    strategy: r.strategy_label(),
                    source: r.source.as_str(),
                    fleet: true,
                    instances: r.instances,
                    pool_max_size: p.pool_max_size,
                    concurrency_per_instance: r.concurrency_per_instance,
                    think_time_ms: r.think_time.as_millis() as u64,
                    duration_s: p.duration_s,
                    refresh_interval_ms: r.refresh.as_millis() as u64,
                    refresh_jitter: r.jitter,
                    connect_pace_per_pool: r.pace_per_pool,
                    rotate_every_ms: r.rotate_every.map(|d| d.as_millis() as u64),
                    store_throttle: r.store_throttle,
                    store_latency_ms: r.store_latency.map(|d| d.as_millis() as u64),
                    rotations: p.rotations,
                    requests_ok: p.requests_ok,
                    requests_failed: p.requests_failed,
                    throughput_rps: round2(p.throughput_rps),
                    p50_ms: round2(p.p50_ms),
                    p99_ms: round2(p.p99_ms),
                    peak_backends: p.peak_backends,
                    stale_after_drain: p.stale_after_drain,
                    convergence_p50_ms: r.convergence_ms.map(|c| c.0),
                    convergence_p99_ms: r.convergence_ms.map(|c| c.1),
                    convergence_max_ms: r.convergence_ms.map(|c| c.2),
                    not_converged: r.not_converged,
                    not_converged_cut_off: r.not_converged_cut_off,
                    store_calls: r.store_calls,
                    store_calls_throttled: r.store_calls_throttled,
                    store_api_calls: r.store_api_calls,
                    store_fetch_failures: r.store_fetch_failures,
                    steady_store_calls_per_instance_per_refresh: r.steady_per_instance_per_refresh,
                    steady_store_calls_per_instance_per_minute: r
                        .steady_per_instance_per_minute()
                        .map(round2),
                    store_calls_per_instance_per_rotation: r.per_instance_per_rotation,
                    peak_logins_per_s: r.peak_logins_per_s,
                    refused_logins: r.refused_logins,
                    peak_store_calls_per_s: r.peak_store_calls_per_s,
                    steady_peak_store_calls_per_s: r.steady_peak_store_calls_per_s,
                    per_rotation: &r.rotations,
                    poll_mean_ms: r.poll_gaps_ms.0,
                    poll_max_ms: r.poll_gaps_ms.1,
                }
            })
            .collect(),
    };
    serde_json::to_string_pretty(&file).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// `--plot`: per fleet run, requests/s (failed in red), the fleet's sessions (N x max_size in
/// red), the store calls per second and the server's logins per second, rotations dashed.
fn svg(runs: &[FleetRun]) -> String {
    use plot::{CHART_HEIGHT, GAP, LEFT, RUN_HEADER, WIDTH};
    let per_run = RUN_HEADER + 4.0 * (CHART_HEIGHT + GAP);
    let height = per_run * runs.len().max(1) as f64 + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, run) in runs.iter().enumerate() {
        let top = i as f64 * per_run + 10.0;
        let report = &run.report;
        let _ = writeln!(
            out,
            r#"<text x="{LEFT}" y="{}" font-size="13" font-weight="bold">{}: fleet of {}, {} ok, {} failed, {} rotations (dashed), convergence p99 {} ms</text>"#,
            top + 14.0,
            plot::escape(&run.label()),
            run.instances,
            report.requests_ok,
            report.requests_failed,
            report.rotations,
            cell(run.convergence_ms.map(|c| format!("{:.0}", c.1))),
        );
        let t = &report.timeline;
        let bucket_s = Timeline::BUCKET.as_secs_f64();
        let throughput: Vec<f64> = t.ok.iter().map(|n| *n as f64 / bucket_s).collect();
        let failed: Vec<f64> = t.failed.iter().map(|n| *n as f64 / bucket_s).collect();
        let backends: Vec<f64> = t.backends.iter().map(|n| *n as f64).collect();
        let mut y = top + RUN_HEADER;
        plot::chart(
            &mut out,
            y,
            t,
            "requests/s",
            &[(&throughput, "#1f77b4"), (&failed, "#d62728")],
            None,
        );
        y += CHART_HEIGHT + GAP;
        plot::chart(
            &mut out,
            y,
            t,
            "sessions",
            &[(&backends, "#2ca02c")],
            Some((run.instances * report.pool_max_size) as f64),
        );
        y += CHART_HEIGHT + GAP;
        plot::chart(
            &mut out,
            y,
            t,
            "store calls/s",
            &[(&run.store_calls_per_s, "#9467bd")],
            None,
        );
        y += CHART_HEIGHT + GAP;
        plot::chart(
            &mut out,
            y,
            t,
            "logins/s",
            &[(&run.logins_per_s, "#8c564b")],
            None,
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(origin: Instant, ms: u64) -> Instant {
        origin + Duration::from_millis(ms)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), Some(50.0));
        assert_eq!(percentile(&values, 0.99), Some(99.0));
        assert_eq!(percentile(&values, 1.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn convergence_is_the_first_connect_with_a_newer_generation_after_the_store_changed() {
        let o = Instant::now();
        let mut trace = InstanceTrace::default();
        // Generation 1 from the start, its connections opened at once.
        trace.observe(at(o, 0), 1, [(1, 2)].into_iter());
        trace.observe(at(o, 20), 1, [(1, 2)].into_iter());
        // The rotation begins at 1000 ms, the store changes at 1200 ms; the provider learns
        // of it at 3000 ms and the first connection with it is seen at 3040 ms.
        trace.observe_proven(at(o, 0), 1);
        trace.observe(at(o, 3000), 2, [(1, 2)].into_iter());
        // A probe: the database accepts it at 3020 ms, before the pool's first session.
        trace.observe_proven(at(o, 3000), 1);
        trace.observe_proven(at(o, 3020), 2);
        trace.observe(at(o, 3040), 2, [(1, 2), (2, 1)].into_iter());
        trace.observe(at(o, 3060), 2, [(1, 2), (2, 2)].into_iter());
        let rotation = RotationTimes {
            started: at(o, 1000),
            changed: at(o, 1200),
        };
        assert_eq!(trace.generation_at(at(o, 1000)), Some(1));
        assert_eq!(trace.generation_at(at(o, 3001)), Some(2));
        assert_eq!(trace.learned_after(rotation.started), Some(at(o, 3000)));
        assert_eq!(trace.proven_after(rotation.started), Some(at(o, 3020)));
        assert_eq!(trace.proven.len(), 2, "only changes are kept");
        assert_eq!(
            convergence(&trace, rotation),
            Some(Duration::from_millis(1840))
        );
        // A second rotation the instance has not followed yet: not converged.
        let second = RotationTimes {
            started: at(o, 5000),
            changed: at(o, 5100),
        };
        assert_eq!(convergence(&trace, second), None);
        // It skipped a credential: a later one counts for the earlier rotation too.
        trace.observe(at(o, 9000), 4, [(2, 2), (4, 1)].into_iter());
        assert_eq!(
            convergence(&trace, second),
            Some(Duration::from_millis(3900))
        );
    }

    #[test]
    fn a_pending_credential_taken_before_the_store_changed_converges_at_zero() {
        let o = Instant::now();
        let mut trace = InstanceTrace::default();
        trace.observe(at(o, 0), 1, [(1, 1)].into_iter());
        // Single user: the database took the pending credential at 1500 ms (a refused login,
        // then the pending one), the store made it current at 2000 ms.
        trace.observe(at(o, 1500), 2, [(1, 1), (2, 1)].into_iter());
        let rotation = RotationTimes {
            started: at(o, 1000),
            changed: at(o, 2000),
        };
        assert_eq!(convergence(&trace, rotation), Some(Duration::ZERO));
        // An instance the observer never saw has nothing to say.
        assert_eq!(convergence(&InstanceTrace::default(), rotation), None);
    }

    pub(super) fn sample(at_ms: u64, calls: u64) -> CallSample {
        CallSample {
            at: Duration::from_millis(at_ms),
            calls,
            failures: 0,
        }
    }

    #[test]
    fn the_steady_rate_is_per_instance_and_leaves_the_rotations_out() {
        let o = Instant::now();
        // Two instances refreshing every 1 s in step (a fleet started at once), plus 3 more
        // calls each inside a rotation's window from 4.5 s to 6.5 s.
        let mut traces = vec![InstanceTrace::default(); 2];
        for trace in &mut traces {
            let mut calls = 0;
            for ms in (0..=10_000).step_by(20) {
                if ms % 1000 == 0 && ms > 0 {
                    calls += 1;
                }
                if ms == 5000 {
                    calls += 3;
                }
                trace.count_calls(at(o, ms), calls);
            }
        }
        assert_eq!(traces[0].calls.len(), 11, "{:?}", traces[0].calls);
        let busy = [(at(o, 4500), at(o, 6500))];
        let rate = steady_rate_per_instance(&traces, o, at(o, 10_000), &busy).unwrap();
        assert!((rate - 1.0).abs() < 1e-9, "{rate}");
        // Where the window falls does not matter: 1.0 in a window that holds no refresh edge.
        let late = steady_rate_per_instance(&traces, at(o, 6500), at(o, 10_000), &[]).unwrap();
        assert!((late - 1.0).abs() < 1e-9, "{late}");
        // Without leaving the rotation out its calls count (12 calls in the 9 s from the first
        // call seen).
        let all = steady_rate_per_instance(&traces, o, at(o, 10_000), &[]).unwrap();
        assert!((all - 12.0 / 9.0).abs() < 1e-9, "{all}");
        // Everything busy: no steady state.
        let everything = [(o, at(o, 10_000))];
        assert_eq!(
            steady_rate_per_instance(&traces, o, at(o, 10_000), &everything),
            None
        );
    }

    #[test]
    fn the_first_poll_is_not_a_call() {
        // 300 instances refreshing every 5 s, built one after another before the load: at the
        // first poll each is somewhere in its gap. Counting from the first poll reads about
        // 1.2 calls per refresh (the first gap cut short); the truth is 1.0.
        let o = Instant::now();
        let traces: Vec<InstanceTrace> = (0..300u64)
            .map(|i| {
                let mut trace = InstanceTrace::default();
                let phase = i * 5000 / 300 / 20 * 20;
                let mut calls = 1;
                for ms in (0..=60_000).step_by(20) {
                    if ms >= phase + 5000 && (ms - phase) % 5000 == 0 {
                        calls += 1;
                    }
                    trace.count_calls(at(o, ms), calls);
                }
                trace
            })
            .collect();
        let rate = steady_rate_per_instance(&traces, o, at(o, 60_000), &[]).unwrap();
        assert!((rate * 5.0 - 1.0).abs() < 1e-9, "{}", rate * 5.0);
    }

    #[test]
    fn the_steady_rate_is_not_biased_towards_the_gaps_that_fit_between_rotations() {
        // 400 instances calling after 3 s and 5 s in turn (mean 4 s: 0.25 calls a second),
        // each from its own phase, and a rotation window of 9 s in every 15 s: the steady
        // stretches (6 s) hold a whole 3-s gap three times as often as a 5-s one (without the
        // weights the rate reads 0.286).
        let o = Instant::now();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        let traces: Vec<InstanceTrace> = (0..400)
            .map(|_| {
                let mut trace = InstanceTrace::default();
                let mut t = next() * 5000.0;
                let mut calls = 0;
                let mut short = next() < 0.5;
                while t < 60_000.0 {
                    calls += 1;
                    trace.count_calls(at(o, t as u64), calls);
                    t += if short { 3000.0 } else { 5000.0 };
                    short = !short;
                }
                trace
            })
            .collect();
        let busy: Vec<_> = (0..4)
            .map(|k| (at(o, 6000 + k * 15_000), at(o, 15_000 + k * 15_000)))
            .collect();
        let rate = steady_rate_per_instance(&traces, o, at(o, 60_000), &busy).unwrap();
        let truth = 1.0 / 4.0;
        assert!((rate / truth - 1.0).abs() < 0.03, "{rate} vs {truth}");
    }

    #[test]
    fn the_fleet_s_calls_are_a_step_function_of_the_samples() {
        let samples: Vec<CallSample> = (0..=10).map(|i| sample(i * 100, i * 3)).collect();
        assert_eq!(calls_at(&samples, Duration::from_millis(450)), 12);
        assert_eq!(calls_at(&samples, Duration::from_millis(500)), 15);
        assert_eq!(calls_at(&samples, Duration::from_secs(9)), 30);
        assert_eq!(calls_at(&[], Duration::from_secs(1)), 0);
    }

    #[test]
    fn the_peak_is_the_most_calls_in_a_second_outside_the_busy_windows() {
        // Polls every 50 ms for 10 s; 2 calls a poll, plus a burst of 40 between 3.0 and
        // 3.2 s, and one of 100 at 7.5 s inside a busy window.
        let mut calls = 0;
        let samples: Vec<CallSample> = (0..=200)
            .map(|i| {
                let ms = i * 50;
                if ms > 0 {
                    calls += 2;
                }
                if (3000..3200).contains(&ms) {
                    calls += 10;
                }
                if ms == 7500 {
                    calls += 100;
                }
                sample(ms, calls)
            })
            .collect();
        let busy = [(Duration::from_secs(7), Duration::from_secs(8))];
        assert_eq!(peak_calls_per_s(&samples, &busy), Some(40 + 40));
        assert_eq!(peak_calls_per_s(&samples, &[]), Some(100 + 40));
        // Nothing outside the busy windows, or no whole second: no peak.
        let all = [(Duration::ZERO, Duration::from_secs(10))];
        assert_eq!(peak_calls_per_s(&samples, &all), None);
        assert_eq!(peak_calls_per_s(&samples[..10], &[]), None);
    }

    #[test]
    fn the_alternating_policy_overlaps_as_the_store_does() {
        let refresh = Duration::from_secs(5);
        let every = Some(Duration::from_secs(15));
        let grace = Duration::from_secs(7);
        let policy = |strategy, source, jitter| {
            fleet_policy(strategy, source, refresh, jitter, every, grace).unwrap()
        };
        let aws = policy(Strategy::AlternatingUsers, SourceName::Aws, 0.1);
        assert_eq!(aws.overlap_window(), Some(Duration::from_secs(15)));
        let memory = policy(Strategy::AlternatingUsers, SourceName::Memory, 0.1);
        assert_eq!(memory.overlap_window(), Some(Duration::from_millis(7500)));
        let single = policy(Strategy::SingleUser, SourceName::Aws, 0.0);
        assert_eq!(single.overlap_window(), None);
        assert_eq!(single.jitter(), 0.0);
        assert_eq!(single.refresh_interval(), refresh);
    }

    #[test]
    fn a_dynamic_role_s_policy_fetches_the_grace_before_a_lease_ends() {
        let grace = Duration::from_secs(7);
        let dynamic = fleet_policy(
            Strategy::AlternatingUsers,
            SourceName::VaultDynamic,
            Duration::from_secs(5),
            0.1,
            Some(Duration::from_secs(15)),
            grace,
        )
        .unwrap();
        assert_eq!(dynamic.expiry_margin(), grace);
        assert_eq!(dynamic.overlap_window(), None);
    }
}
