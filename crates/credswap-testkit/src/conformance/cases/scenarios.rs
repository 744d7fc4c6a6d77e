//! The load scenarios: rotations every second under 32 workers lose no request, and
//! rotations every 200 ms under 128 workers on a pool of 4 (the drill's stress run) lose none
//! either and never take the pool past its size at the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use credswap_core::contract::{AdapterStats, Rotation};
use credswap_core::{Policy, RotatingCredentials};

use super::super::{Adapter, Route};
use super::helpers::*;
use crate::TestPostgres;
use crate::harness::{app_policy, assert_contract, scenario_config};
use crate::scenario::{self, Progress, RotationSetup, ScenarioConfig, ScenarioReport, Strategy};

/// What a load run through a pool of `A` showed.
pub(crate) struct Run {
    pub(crate) report: ScenarioReport,
    pub(crate) stats: AdapterStats,
    pub(crate) summary: String,
}

/// Runs the scenario `config` with `strategy`, the provider on `policy`, `SELECT current_user`
/// as the request; asserts that the pool never counted more than its max size.
pub(crate) async fn run<A: Adapter>(
    pg: &TestPostgres,
    strategy: Strategy,
    policy: Policy,
    config: &ScenarioConfig,
) -> Run {
    // Behind a pooler, server sessions outlive the pool's connections by the pooler's idle
    // timeout: the drain is judged that much later.
    let config = &ScenarioConfig {
        drain_grace: config.drain_grace + pooler_slack(pg),
        ..config.clone()
    };
    let setup = RotationSetup::create(pg, strategy).await.expect("roles");
    let credentials = RotatingCredentials::new(setup.store().clone(), policy)
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(pg, credentials, config.pool_max_size).await;
    let peak_size = Arc::new(AtomicUsize::new(0));
    let workload = Arc::new(Requests::<A> {
        pool,
        roles: setup.roles().to_vec(),
        peak_size: Arc::clone(&peak_size),
    });
    let report = scenario::run(pg, setup, workload, config, Arc::new(Progress::default()))
        .await
        .expect("scenario");
    let stats = rotation.stats();
    let summary = format!("{}: {}\n{stats:?}", A::NAME, report.summary());
    eprintln!("{summary}");
    let peak_size = peak_size.load(Ordering::Relaxed);
    assert!(
        peak_size <= config.pool_max_size && stats.live() <= config.pool_max_size,
        "the pool counted {peak_size} connections: {summary}"
    );
    if pg.pooler().is_some() {
        assert_client_side_drained(&rotation, &summary).await;
    }
    Run {
        report,
        stats,
        summary,
    }
}

/// The harness's contract on a scenario report; behind a pooler the server's session count is
/// the pooler's (old server sessions linger up to its idle timeout), so the pool's size is judged
/// by the pool's own count, which [`run`] checks.
pub(crate) fn assert_server_side(pg: &TestPostgres, report: &ScenarioReport, summary: &str) {
    if pg.pooler().is_none() {
        assert_contract(report, summary);
        return;
    }
    assert!(report.rotations >= 10, "{summary}");
    assert!(report.requests_ok > 1000, "{summary}");
    assert!(report.peak_backends >= 1, "{summary}");
}

/// Behind a pooler the server sessions are the pooler's: it hands an idle server session of the
/// same role to any client (single user: one opened with the old password), and keeps one of a
/// retired role until its idle timeout. What the adapter controls is its own connections: none of
/// an older generation may be left once the drain is over.
pub(crate) async fn assert_client_side_drained(rotation: &Rotation, summary: &str) {
    wait_for(
        "no connection of an older generation left in the pool",
        Duration::from_secs(2),
        || {
            let stats = rotation.stats();
            stats.live_stale() == 0
        },
    )
    .await;
    eprintln!(
        "{summary}\nthe pool's own connections drained; the server sessions are the pooler's"
    );
}

pub(crate) async fn scenario_is_clean<A: Adapter, R: Route>(strategy: Strategy) {
    let pg = R::postgres_alone().await;
    let Run {
        report,
        stats,
        summary,
        ..
    } = run::<A>(&pg, strategy, app_policy(strategy), &scenario_config()).await;
    assert_server_side(&pg, &report, &summary);
    assert_eq!(report.requests_failed, 0, "{summary}");
    assert!(
        stats.generation.get() >= 10,
        "the pool followed every rotation: {summary}"
    );
    assert!(stats.stale_closed > 0, "{summary}");
    assert_eq!(stats.untagged, 0, "{summary}");
    assert_eq!(
        stats.connect_failures, 0,
        "every connect found a working credential within its deadline: {summary}"
    );
}

/// Two roles take turns, each valid for an overlap after the store moves on; 11 s under 32
/// workers with a rotation every second.
pub async fn alternating_users_rotation_loses_no_request<A: Adapter, R: Route>() {
    scenario_is_clean::<A, R>(Strategy::AlternatingUsers).await;
}

/// One role whose password changes in the database 50 ms before the store knows the new one.
pub async fn single_user_rotation_loses_no_request<A: Adapter, R: Route>() {
    scenario_is_clean::<A, R>(Strategy::SingleUser).await;
}

/// The drill's stress run, as a case: a rotation every 200 ms, 128 workers, a pool of 4, 6 s,
/// both strategies. Every pool is contended all the time, so a rotation's replacements come
/// the moment the old sessions close, and refused logins meet 128 waiting checkouts at once.
/// No request may fail, nothing may be stale after the drain, and the pool may never count
/// more than 4 connections (checked in `run`). At the server a session the client has just closed can
/// still be listed for the moment its backend takes to exit, which no driver reports (see
/// `budget::SERVER_EXIT_GRACE`): there the bound is 4 + 1, where before the session budget
/// covered probes and bb8's unsized managers it read up to 10.
pub async fn rotations_every_200ms_under_128_workers_stay_within_the_pool<A: Adapter, R: Route>() {
    let every = Duration::from_millis(200);
    for strategy in [Strategy::AlternatingUsers, Strategy::SingleUser] {
        let pg = R::postgres_alone().await;
        let config = ScenarioConfig {
            duration: Duration::from_secs(6),
            rotate_every: Some(every),
            concurrency: 128,
            pool_max_size: 4,
            ..ScenarioConfig::default()
        };
        // As the drill's: the overlap the rotator leaves (half an interval), refreshed within.
        let mut policy =
            Policy::builder().backoff(Duration::from_millis(100), Duration::from_secs(2));
        policy = match strategy {
            Strategy::AlternatingUsers => {
                policy.overlap_window(every / 2).refresh_interval(every / 4)
            }
            Strategy::SingleUser => policy.refresh_interval(Duration::from_millis(250)),
        };
        let Run {
            report, summary, ..
        } = run::<A>(&pg, strategy, policy.build().expect("policy"), &config).await;
        assert!(report.rotations >= 10, "{summary}");
        // Load, not throughput: a debug build of sqlx 0.9 logs in slowly enough that every
        // session is replaced before its pool serves much (424 requests in 6 s once).
        assert!(report.requests_ok >= 100, "{summary}");
        assert_eq!(report.requests_failed, 0, "{summary}");
        assert_eq!(report.stale_after_drain, 0, "{summary}");
        assert!(
            (1..=config.pool_max_size + 1).contains(&report.peak_backends),
            "{summary}"
        );
    }
}
