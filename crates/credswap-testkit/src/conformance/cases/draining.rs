//! Draining: connections of an old credential close, idle at once and busy once returned, and
//! the pool never holds more than its size.

use std::time::Duration;

use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};

use super::super::{Adapter, Route};
use super::helpers::*;
use super::scenarios::*;
use crate::harness::{manual_policy, session_pids, single_role};
use crate::scenario::{ScenarioConfig, Strategy};
use crate::{random_password, unique_name};

/// Four idle connections; the store moves to the other role; without any checkout, every
/// session of the old role leaves `pg_stat_activity` promptly. Four rounds, alternating.
pub async fn idle_stale_connections_close_after_a_change<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let roles = [unique_name("idle_a"), unique_name("idle_b")];
    let first = login_role(&pg, &roles[0]).await;
    login_role(&pg, &roles[1]).await;
    let store = MemorySource::new(Credential::new(roles[0].clone(), first));
    let credentials = RotatingCredentials::new(store.clone(), manual_policy())
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    let mut latencies = Vec::new();
    for round in 0..4 {
        let (old, new) = (&roles[round % 2], &roles[(round + 1) % 2]);
        let held = hold::<A>(&pool, 4).await;
        let mut pids: Vec<i32> = held.iter().map(|(_, me)| me.pid).collect();
        assert!(held.iter().all(|(_, me)| &me.user == old), "round {round}");
        drop(held);
        // Returns may be asynchronous: let the four reach the idle queue.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut open = session_pids(&pg, old).await;
        pids.sort_unstable();
        open.sort_unstable();
        assert_eq!(
            open, pids,
            "round {round}: the four connections are open and idle"
        );
        let before = rotation.stats();

        // Provision first, then point the store (and the provider) at the other role.
        let password = random_password();
        pg.set_password(new, &password).await.expect("ALTER ROLE");
        store.set(Credential::new(new.clone(), password));
        credentials.refresh().await.expect("refresh");

        // No checkout from here on: the adapter closes them by itself.
        let gone = wait_closed(
            &pg,
            old,
            None,
            Duration::from_secs(1),
            &format!("round {round}: the idle sessions of {old} leave pg_stat_activity"),
        )
        .await;
        latencies.push(gone);
        wait_for(
            &format!("round {round}: the adapter counts no live stale connection"),
            Duration::from_secs(1),
            || rotation.stats().live_stale() == 0,
        )
        .await;
        let after = rotation.stats();
        assert_eq!(
            after.stale_closed_idle - before.stale_closed_idle,
            4,
            "round {round}: four closed while idle: {after:?}"
        );
        assert!(
            after.stale_closed - before.stale_closed >= 4,
            "round {round}: {after:?}"
        );
    }
    eprintln!(
        "{}: 4 idle stale sessions gone from pg_stat_activity after {latencies:?}",
        A::NAME
    );
    assert_eq!(whoami::<A>(&pool).await.user, roles[0]);
}

/// A transaction open across a rotation commits on its connection, which is closed once
/// returned; the idle connection beside it is closed at once.
pub async fn busy_connection_commits_across_rotation_then_closes_on_return<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;

    let mut busy = checkout::<A>(&pool).await;
    let busy_pid = who(&mut busy).await.pid;
    let idle_pid = whoami::<A>(&pool).await.pid; // a second connection, returned
    assert_ne!(busy_pid, idle_pid);
    tokio::time::sleep(Duration::from_millis(100)).await;
    execute(
        &mut busy,
        "BEGIN; CREATE TEMP TABLE credswap_busy (x int); INSERT INTO credswap_busy VALUES (1)",
    )
    .await;

    rotate_single(&pg, &role, &store, &credentials).await;

    wait_closed(
        &pg,
        &role,
        Some(idle_pid),
        Duration::from_secs(1),
        "the idle connection of the old credential is closed",
    )
    .await;
    assert!(
        is_open(&pg, &role, busy_pid).await,
        "the busy connection must survive until it is returned"
    );
    execute(
        &mut busy,
        "INSERT INTO credswap_busy VALUES (2); SELECT pg_sleep(0.3)",
    )
    .await;
    execute(&mut busy, "COMMIT").await;
    execute(
        &mut busy,
        "DO $$ BEGIN IF (SELECT count(*) FROM credswap_busy) <> 2 THEN \
         RAISE EXCEPTION 'the transaction did not commit both rows'; END IF; END $$",
    )
    .await;
    assert_eq!(who(&mut busy).await.pid, busy_pid);

    drop(busy);
    let closed = wait_closed(
        &pg,
        &role,
        Some(busy_pid),
        Duration::from_secs(1),
        "the busy connection of the old credential is closed after its return",
    )
    .await;
    let me = whoami::<A>(&pool).await;
    assert_eq!(me.user, role);
    assert!(
        me.pid != busy_pid && me.pid != idle_pid,
        "a new connection serves"
    );
    wait_for(
        "the adapter counts no live stale connection",
        Duration::from_secs(1),
        || rotation.stats().live_stale() == 0,
    )
    .await;
    let stats = rotation.stats();
    assert!(stats.stale_closed >= 2, "{stats:?}");
    assert!(stats.stale_closed_idle >= 1, "{stats:?}");
    assert_eq!(
        stats.live_per_generation.keys().copied().max(),
        Some(credentials.generation()),
        "{stats:?}"
    );
    eprintln!(
        "{}: the returned stale connection closed after {closed:?}",
        A::NAME
    );
}

/// 16 workers through a pool of 4 while two roles take turns every 500 ms: never more than 4
/// sessions of the application's roles in `pg_stat_activity`, and not one failed request.
pub async fn never_more_connections_than_max_size<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let max_size = 4;
    let config = ScenarioConfig {
        duration: Duration::from_secs(3),
        rotate_every: Some(Duration::from_millis(500)),
        concurrency: 16,
        pool_max_size: max_size,
        drain_grace: Duration::from_secs(1),
        overlap: Some(Duration::from_millis(250)),
        store_lag: Duration::from_millis(50),
        think_time: Duration::ZERO,
        sample_every: crate::scenario::SAMPLE_EVERY,
    };
    let policy = Policy::builder()
        .refresh_interval(Duration::from_millis(100))
        .overlap_window(Duration::from_millis(250))
        .backoff(Duration::from_millis(100), Duration::from_secs(1))
        .build()
        .expect("policy");
    let Run {
        report, summary, ..
    } = run::<A>(&pg, Strategy::AlternatingUsers, policy, &config).await;
    assert!(report.rotations >= 4, "{summary}");
    assert!(report.requests_ok > 100, "{summary}");
    assert_eq!(report.requests_failed, 0, "{summary}");
    if pg.pooler().is_none() {
        assert!(
            (1..=max_size).contains(&report.peak_backends),
            "sessions seen at once in pg_stat_activity: {summary}"
        );
        assert_eq!(report.stale_after_drain, 0, "{summary}");
    }
}
