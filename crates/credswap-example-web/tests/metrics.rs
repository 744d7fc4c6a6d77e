//! `/metrics` against the documentation: for each pool, what the example serves in the
//! Prometheus text format is exactly the table in `credswap_core::metrics`' module docs (names,
//! types, units) and `credswap::metrics::NAMES`, with the `provider` and `pool` labels, and no
//! secret.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use credswap::metrics::NAMES;
use credswap::{Credential, MemorySource, RotatingCredentials};
use credswap_example_web::{PROVIDER_LABEL, PoolKind};
use credswap_testkit::harness::{app_policy, postgres};
use credswap_testkit::scenario::Strategy;
use credswap_testkit::{random_password, unique_name};

use common::App;

/// The documented table: the module docs of `credswap_core::metrics`.
const DOCS: &str = include_str!("../../credswap-core/src/metrics.rs");

/// One row of the documented table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    kind: String,
    unit: String,
}

/// The rows `//! | \`name\` | type | unit | what |` of the table in the module docs.
fn documented() -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    for line in DOCS.lines() {
        let Some(row) = line.trim().strip_prefix("//! | `") else {
            continue;
        };
        let columns: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = columns[0].trim_end_matches('`').to_owned();
        let row = Row {
            kind: columns[1].to_owned(),
            unit: columns[2].to_owned(),
        };
        assert!(
            rows.insert(name.clone(), row).is_none(),
            "{name} twice in the table"
        );
    }
    assert!(
        !rows.is_empty(),
        "no table found in credswap-core/src/metrics.rs"
    );
    rows
}

/// What a scrape says about one metric.
#[derive(Debug, Default)]
struct Scraped {
    kind: Option<String>,
    /// Each sample's labels (`key="value"`, as printed) and value.
    samples: Vec<(String, f64)>,
}

/// Parses the Prometheus text format: `# TYPE name kind` and `name{labels} value` lines.
fn parse(text: &str) -> BTreeMap<String, Scraped> {
    let mut metrics: BTreeMap<String, Scraped> = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            metrics.entry(name.to_owned()).or_default().kind = Some(kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample: series value");
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
        metrics
            .entry(name.to_owned())
            .or_default()
            .samples
            .push((labels.to_owned(), value));
    }
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_served_match_the_documented_table_for_every_pool() {
    let table = documented();
    let names: BTreeSet<String> = NAMES.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        table.keys().cloned().collect::<BTreeSet<_>>(),
        names,
        "the documented table and credswap::metrics::NAMES"
    );

    let pg = postgres().await;
    for kind in PoolKind::ALL {
        // A credential with an end, so that credswap_credential_expires_in_seconds is reported.
        let role = unique_name("metrics");
        let first = random_password();
        pg.create_login_role(&role, &first).await.unwrap();
        let expires = || SystemTime::now() + Duration::from_secs(3600);
        let store = MemorySource::new(
            Credential::new(role.clone(), first.clone()).with_expires_at(expires()),
        );
        let credentials = RotatingCredentials::new(store.clone(), app_policy(Strategy::SingleUser))
            .await
            .unwrap();
        let app = App::start(&pg, kind, credentials.clone(), 2).await;
        let (status, body) = app.get("/query").await.unwrap();
        assert_eq!(status, 200, "{kind}: {body}");

        // One rotation, so that the counters have moved.
        let second = random_password();
        pg.set_password(&role, &second).await.unwrap();
        store.set(Credential::new(role.clone(), second.clone()).with_expires_at(expires()));
        credentials.refresh().await.unwrap();
        let (status, body) = app.get("/query").await.unwrap();
        assert_eq!(status, 200, "{kind}: {body}");

        let response = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        assert!(
            !text.contains(&first) && !text.contains(&second),
            "{kind}: /metrics shows a password"
        );

        let scraped = parse(&text);
        let credswap: BTreeSet<String> = scraped
            .keys()
            .filter(|n| n.starts_with("credswap_"))
            .cloned()
            .collect();
        assert_eq!(
            credswap, names,
            "{kind}: scraped names and the documented table\n{text}"
        );

        for (name, row) in &table {
            let metric = &scraped[name];
            assert_eq!(
                metric.kind.as_deref(),
                Some(row.kind.as_str()),
                "{kind}: {name}'s # TYPE and the table's type column"
            );
            assert_eq!(
                row.unit == "seconds",
                name.ends_with("_seconds"),
                "{name}: the unit column and the name's suffix"
            );
            let label = if name.starts_with("credswap_pool_") {
                format!("pool=\"{kind}\"")
            } else {
                format!("provider=\"{PROVIDER_LABEL}\"")
            };
            let labels: Vec<&str> = metric.samples.iter().map(|(l, _)| l.as_str()).collect();
            assert_eq!(labels, [label.as_str()], "{kind}: {name}'s series");
        }

        let value = |name: &str| scraped[name].samples[0].1;
        assert_eq!(value("credswap_credential_generation"), 2.0, "{kind}");
        assert_eq!(value("credswap_rotations_total"), 1.0, "{kind}");
        assert_eq!(value("credswap_credential_healthy"), 1.0, "{kind}");
        assert_eq!(value("credswap_credential_refused"), 0.0, "{kind}");
        assert!(value("credswap_fetches_total") >= 2.0, "{kind}");
        assert!(value("credswap_pool_connects_total") >= 2.0, "{kind}");
        assert!(value("credswap_pool_connections") >= 1.0, "{kind}");
        let left = value("credswap_credential_expires_in_seconds");
        assert!((3500.0..=3600.0).contains(&left), "{kind}: {left}");
        app.stop().await;
    }
}
