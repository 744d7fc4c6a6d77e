//! Metrics through the [`metrics`] facade (feature `metrics`): the application installs the
//! exporter it wants (Prometheus, StatsD, OpenTelemetry, ...); credswap forces none.
//!
//! A [`Reporter`] names what it reports on (providers and pools, each with a name you give) and
//! [`records`](Reporter::record) their state when asked: from a `/metrics` handler just before
//! rendering, or on a timer with [`Reporter::spawn`]. The numbers come from the counters the
//! provider and the adapters keep anyway ([`Stats`](crate::Stats),
//! [`AdapterStats`](crate::contract::AdapterStats), [`Health`](crate::Health)), so the hot path
//! pays nothing for metrics, and nothing lives in globals: a reporter holds its values.
//!
//! # Why a reporter, not a counter bump at every event
//!
//! The counters exist already (lock-free atomics the adapters need for their own decisions and
//! tests). Emitting each event again through the facade would cost a registry lookup on every
//! connect and checkout; publishing their values as absolute counters at scrape time costs
//! nothing in between and gives the same series.
//!
//! # The metrics
//!
//! Names and units follow the Prometheus conventions (`_total` counters, `_seconds` gauges).
//! Provider metrics carry the label `provider`, pool metrics the label `pool`.
//!
//! | name | type | unit | what it counts |
//! |---|---|---|---|
//! | `credswap_credential_generation` | gauge | | the current generation (1, 2, ...) |
//! | `credswap_credential_age_seconds` | gauge | seconds | age of the current credential (since issued, else since published) |
//! | `credswap_credential_expires_in_seconds` | gauge | seconds | time until the current credential expires (only for credentials with an expiry) |
//! | `credswap_credential_healthy` | gauge | | 1 when [`Health::is_healthy`](crate::Health::is_healthy), else 0 |
//! | `credswap_credential_refused` | gauge | | 1 while the database refuses the current credential, else 0 |
//! | `credswap_rotation_pending_seconds` | gauge | seconds | how long the store has held a pending credential (`AWSPENDING`) the provider read; 0 when it is not rotating |
//! | `credswap_rotation_stuck` | gauge | | 1 while the store's rotation is stuck ([`Health::is_rotation_stuck`](crate::Health::is_rotation_stuck)), else 0 |
//! | `credswap_fetches_total` | counter | | fetches from the store |
//! | `credswap_fetch_failures_total` | counter | | fetches that failed or timed out |
//! | `credswap_rotations_total` | counter | | new credentials published |
//! | `credswap_validation_rejections_total` | counter | | new credentials the validator rejected |
//! | `credswap_auth_failure_refreshes_total` | counter | | refreshes caused by a refused login |
//! | `credswap_database_refusals_total` | counter | | logins the database refused with the current credential |
//! | `credswap_pending_published_total` | counter | | pending credentials published before the store finished its rotation |
//! | `credswap_store_calls_total` | counter | | calls to the store: fetches of the current and of the pending credential |
//! | `credswap_pool_connections` | gauge | | connections the pool holds |
//! | `credswap_pool_stale_connections` | gauge | | of those, connections of an older generation not closed yet |
//! | `credswap_pool_connects_total` | counter | | connections opened |
//! | `credswap_pool_connect_failures_total` | counter | | connects that failed (after their retries) |
//! | `credswap_pool_connect_retries_total` | counter | | connect retries after a transient failure |
//! | `credswap_pool_auth_failures_total` | counter | | connect attempts refused as an authentication failure |
//! | `credswap_pool_auth_waits_total` | counter | | connect retries after a refused login (waiting for a working credential) |
//! | `credswap_pool_stale_closed_total` | counter | | connections closed because their credential was stale |
//! | `credswap_pool_canaries_total` | counter | | old connections let go to try a newer login |
//! | `credswap_pool_pending_connects_total` | counter | | connections and probes opened with a store's pending credential |
//! | `credswap_pool_fallback_connects_total` | counter | | connects that fell back to the last accepted login |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use credswap_core::metrics::Reporter;
//! use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
//!
//! let credentials =
//!     RotatingCredentials::new(MemorySource::new(Credential::new("app", "pw")), Policy::default())
//!         .await?;
//! let reporter = Reporter::new().provider("main", &credentials);
//! reporter.record(); // into whatever recorder the application installed (none here: a no-op)
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

use crate::RotatingCredentials;
use crate::contract::Rotation;

/// Reports providers and pools through the [`metrics`] facade. See the [module docs](self).
#[derive(Clone, Default)]
pub struct Reporter {
    providers: Vec<(String, RotatingCredentials)>,
    pools: Vec<(String, Rotation)>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field(
                "providers",
                &self.providers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field(
                "pools",
                &self.pools.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Reporter {
    /// A reporter of nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports `credentials` with the label `provider = name`.
    pub fn provider(mut self, name: impl Into<String>, credentials: &RotatingCredentials) -> Self {
        self.providers.push((name.into(), credentials.clone()));
        self
    }

    /// Reports the pool behind `rotation` (the handle its adapter returned) with the label
    /// `pool = name`.
    pub fn pool(mut self, name: impl Into<String>, rotation: &Rotation) -> Self {
        self.pools.push((name.into(), rotation.clone()));
        self
    }

    /// Registers each metric's description and unit with the installed recorder (exporters
    /// print them as `# HELP`). [`record`](Self::record) does not need it.
    pub fn describe() {
        describe_gauge!(
            "credswap_credential_generation",
            "The current credential generation"
        );
        describe_gauge!(
            "credswap_credential_age_seconds",
            Unit::Seconds,
            "Age of the current credential"
        );
        describe_gauge!(
            "credswap_credential_expires_in_seconds",
            Unit::Seconds,
            "Time until the current credential expires"
        );
        describe_gauge!(
            "credswap_credential_healthy",
            "1 when the current credential is healthy"
        );
        describe_gauge!(
            "credswap_credential_refused",
            "1 while the database refuses the current credential"
        );
        describe_gauge!(
            "credswap_rotation_pending_seconds",
            Unit::Seconds,
            "How long the store has held a pending credential; 0 when it is not rotating"
        );
        describe_gauge!(
            "credswap_rotation_stuck",
            "1 while the store's rotation is stuck"
        );
        for (name, help) in PROVIDER_COUNTERS {
            describe_counter!(*name, *help);
        }
        describe_gauge!("credswap_pool_connections", "Connections the pool holds");
        describe_gauge!(
            "credswap_pool_stale_connections",
            "Connections of an older credential generation not closed yet"
        );
        for (name, help) in POOL_COUNTERS {
            describe_counter!(*name, *help);
        }
    }

    /// Records the current values of every provider and pool into the installed recorder.
    pub fn record(&self) {
        for (name, credentials) in &self.providers {
            let labels = [("provider", name.clone())];
            let health = credentials.health();
            let stats = credentials.stats();
            gauge!("credswap_credential_generation", &labels).set(health.generation().get() as f64);
            gauge!("credswap_credential_age_seconds", &labels).set(health.age().as_secs_f64());
            if let Some(left) = health.expires_in() {
                gauge!("credswap_credential_expires_in_seconds", &labels).set(left.as_secs_f64());
            }
            gauge!("credswap_credential_healthy", &labels).set(flag(health.is_healthy()));
            gauge!("credswap_credential_refused", &labels).set(flag(health.is_refused()));
            gauge!("credswap_rotation_pending_seconds", &labels).set(
                health
                    .rotation_pending_for()
                    .map_or(0.0, |age| age.as_secs_f64()),
            );
            gauge!("credswap_rotation_stuck", &labels).set(flag(health.is_rotation_stuck()));
            let values = [
                stats.fetches,
                stats.fetch_failures,
                stats.rotations,
                stats.rejected,
                stats.auth_failure_refreshes,
                stats.refusals,
                stats.pending_published,
                stats.store_calls,
            ];
            for ((metric, _), value) in PROVIDER_COUNTERS.iter().zip(values) {
                counter!(*metric, &labels).absolute(value);
            }
        }
        for (name, rotation) in &self.pools {
            let labels = [("pool", name.clone())];
            let stats = rotation.stats();
            gauge!("credswap_pool_connections", &labels).set(stats.live() as f64);
            gauge!("credswap_pool_stale_connections", &labels).set(stats.live_stale() as f64);
            let values = [
                stats.opened,
                stats.connect_failures,
                stats.connect_retries,
                stats.auth_failures,
                stats.auth_retries,
                stats.stale_closed,
                stats.canaries,
                stats.pending_connects,
                stats.fallback_connects,
            ];
            for ((metric, _), value) in POOL_COUNTERS.iter().zip(values) {
                counter!(*metric, &labels).absolute(value);
            }
        }
    }

    /// Records every `every` in a task of the current Tokio runtime until the returned guard is
    /// dropped. The task holds the providers and pools' handles while it runs.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn spawn(self, every: Duration) -> ReporterTask {
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                self.record();
            }
        });
        ReporterTask { task }
    }
}

/// The task of [`Reporter::spawn`]; dropping it stops the task.
#[derive(Debug)]
pub struct ReporterTask {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReporterTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// Provider counters, in the order [`Reporter::record`] fills them.
const PROVIDER_COUNTERS: &[(&str, &str)] = &[
    ("credswap_fetches_total", "Fetches from the secret store"),
    (
        "credswap_fetch_failures_total",
        "Fetches from the secret store that failed or timed out",
    ),
    ("credswap_rotations_total", "New credentials published"),
    (
        "credswap_validation_rejections_total",
        "New credentials the validator rejected",
    ),
    (
        "credswap_auth_failure_refreshes_total",
        "Refreshes caused by a refused login",
    ),
    (
        "credswap_database_refusals_total",
        "Logins the database refused with the current credential",
    ),
    (
        "credswap_pending_published_total",
        "Pending credentials published before the store finished its rotation",
    ),
    (
        "credswap_store_calls_total",
        "Calls to the store: fetches of the current and of the pending credential",
    ),
];

/// Pool counters, in the order [`Reporter::record`] fills them.
const POOL_COUNTERS: &[(&str, &str)] = &[
    ("credswap_pool_connects_total", "Connections opened"),
    (
        "credswap_pool_connect_failures_total",
        "Connects that failed after their retries",
    ),
    (
        "credswap_pool_connect_retries_total",
        "Connect retries after a transient failure",
    ),
    (
        "credswap_pool_auth_failures_total",
        "Connect attempts refused as an authentication failure",
    ),
    (
        "credswap_pool_auth_waits_total",
        "Connect retries after a refused login, waiting for a working credential",
    ),
    (
        "credswap_pool_stale_closed_total",
        "Connections closed because their credential was stale",
    ),
    (
        "credswap_pool_canaries_total",
        "Old connections let go to try a newer login",
    ),
    (
        "credswap_pool_pending_connects_total",
        "Connections and probes opened with a store's pending credential",
    ),
    (
        "credswap_pool_fallback_connects_total",
        "Connects that fell back to the last accepted login",
    ),
];

/// Every metric name this module reports, for tests and docs that check the table.
pub const NAMES: &[&str] = &[
    "credswap_credential_generation",
    "credswap_credential_age_seconds",
    "credswap_credential_expires_in_seconds",
    "credswap_credential_healthy",
    "credswap_credential_refused",
    "credswap_rotation_pending_seconds",
    "credswap_rotation_stuck",
    "credswap_fetches_total",
    "credswap_fetch_failures_total",
    "credswap_rotations_total",
    "credswap_validation_rejections_total",
    "credswap_auth_failure_refreshes_total",
    "credswap_database_refusals_total",
    "credswap_pending_published_total",
    "credswap_store_calls_total",
    "credswap_pool_connections",
    "credswap_pool_stale_connections",
    "credswap_pool_connects_total",
    "credswap_pool_connect_failures_total",
    "credswap_pool_connect_retries_total",
    "credswap_pool_auth_failures_total",
    "credswap_pool_auth_waits_total",
    "credswap_pool_stale_closed_total",
    "credswap_pool_canaries_total",
    "credswap_pool_pending_connects_total",
    "credswap_pool_fallback_connects_total",
];

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::SystemTime;

    use metrics_util::MetricKind;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;
    use crate::{Credential, Generation, MemorySource, Policy};

    const SECRET: &str = "s3cr3t-metrics-pw";

    #[test]
    fn the_table_in_the_docs_lists_every_name() {
        let docs = include_str!("metrics.rs");
        for name in NAMES {
            assert!(
                docs.contains(&format!("| `{name}` |")),
                "{name} is not in the table"
            );
        }
        let counters = PROVIDER_COUNTERS
            .iter()
            .chain(POOL_COUNTERS)
            .map(|(n, _)| *n);
        for name in counters {
            assert!(NAMES.contains(&name), "{name} is not in NAMES");
        }
    }

    #[tokio::test]
    async fn record_reports_providers_and_pools_with_their_labels() {
        let store = MemorySource::new(
            Credential::new("app", SECRET)
                .with_expires_at(SystemTime::now() + Duration::from_secs(600)),
        );
        let credentials = RotatingCredentials::new(store.clone(), Policy::default())
            .await
            .unwrap();
        store.set(
            Credential::new("app", "next-pw")
                .with_expires_at(SystemTime::now() + Duration::from_secs(600)),
        );
        credentials.refresh().await.unwrap();
        credentials.report_refused(credentials.generation());
        let rotation = crate::contract::Adapter::new(credentials.clone()).rotation();
        let reporter = Reporter::new()
            .provider("main", &credentials)
            .pool("api", &rotation);
        assert!(!format!("{reporter:?}").contains(SECRET));

        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            Reporter::describe();
            reporter.record();
        });
        let mut seen = HashMap::new();
        for (key, unit, _, value) in snapshotter.snapshot().into_vec() {
            let name = key.key().name().to_owned();
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            for text in labels.iter().chain([&name]) {
                assert!(!text.contains(SECRET));
            }
            if name.starts_with("credswap_pool_") {
                assert_eq!(labels, ["pool=api"], "{name}");
            } else {
                assert_eq!(labels, ["provider=main"], "{name}");
            }
            if name.ends_with("_seconds") {
                assert_eq!(unit, Some(Unit::Seconds), "{name}");
            }
            let kind = key.kind();
            let value = match value {
                DebugValue::Counter(v) => {
                    assert_eq!(kind, MetricKind::Counter);
                    v as f64
                }
                DebugValue::Gauge(v) => v.into_inner(),
                DebugValue::Histogram(_) => panic!("no histograms"),
            };
            seen.insert(name, value);
        }
        for name in NAMES {
            assert!(seen.contains_key(*name), "{name} was not recorded");
        }
        assert_eq!(
            seen["credswap_credential_generation"],
            Generation::FIRST.next().get() as f64
        );
        assert_eq!(seen["credswap_rotations_total"], 1.0);
        assert_eq!(seen["credswap_fetches_total"], 2.0);
        assert_eq!(seen["credswap_database_refusals_total"], 1.0);
        assert_eq!(seen["credswap_credential_refused"], 1.0);
        assert_eq!(seen["credswap_credential_healthy"], 0.0);
        let left = seen["credswap_credential_expires_in_seconds"];
        assert!((590.0..=600.0).contains(&left), "{left}");
        assert_eq!(seen["credswap_pool_connections"], 0.0);
    }
}
