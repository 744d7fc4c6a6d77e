//! Leases, restarts, shutdown and secrets: a server restart fails only requests in flight, a
//! leased credential's connections retire before it expires, dropping the pool stops every
//! task, and nothing prints the password.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
use tokio::time::Instant;

use super::super::{Adapter, Route};
use super::capture;
use super::helpers::*;
use crate::harness::{error_chain, manual_policy, session_pids, single_role};
use crate::{random_password, unique_name};

/// A quick server restart under load (a fast shutdown, 250 ms with nothing listening, the same
/// port again): connects during it are retried (connection refused, `57P03`), so the only
/// requests that fail are those in flight on a session the shutdown ended, at most one per
/// worker; requests succeed again right after.
pub async fn a_server_restart_fails_only_requests_in_flight<A: Adapter, R: Route>() {
    let mut pg = R::postgres_alone().await;
    let (role, _, _store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = build::<A>(&pg, credentials, 4).await;
    let workers = 16;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let restarted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (pool, role, stop, restarted) = (
                pool.clone(),
                role.clone(),
                Arc::clone(&stop),
                Arc::clone(&restarted),
            );
            tokio::spawn(async move {
                let (mut ok_after, mut failed, mut errors) = (0u64, 0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match A::whoami(&pool).await {
                        Ok(me) => {
                            assert_eq!(me.user, role);
                            if restarted.load(Ordering::Relaxed) {
                                ok_after += 1;
                            }
                        }
                        Err(e) => {
                            failed += 1;
                            errors.push(error_chain(&*e));
                        }
                    }
                    tokio::task::yield_now().await;
                }
                (ok_after, failed, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    pg.restart(Duration::from_millis(250))
        .await
        .expect("restart");
    restarted.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok_after, mut failed, mut errors) = (0, 0, Vec::new());
    for task in tasks {
        let (o, f, e) = task.await.expect("worker");
        ok_after += o;
        failed += f;
        errors.extend(e);
    }
    let stats = rotation.stats();
    errors.truncate(3);
    let summary = format!(
        "{}: {failed} failed, {ok_after} ok after the restart; {stats:?}; first errors {errors:?}",
        A::NAME
    );
    eprintln!("{summary}");
    assert!(
        ok_after > 100,
        "requests succeed again after the restart: {summary}"
    );
    assert!(
        failed <= workers,
        "only requests in flight when the server shut down may fail: {summary}"
    );
}

/// A credential that expires in 3 s with a 2 s `expiry_margin`: its idle connection is closed
/// between the retirement point (1 s) and the expiry, without a checkout; a connection opened
/// after the retirement point (no replacement exists yet) is kept.
pub async fn leased_credential_connections_retire_before_expiry<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let role = unique_name("leased");
    let password = login_role(&pg, &role).await;
    let (lease, margin) = (Duration::from_secs(3), Duration::from_secs(2));
    let started = Instant::now();
    let credential =
        Credential::new(role.clone(), password).with_expires_at(SystemTime::now() + lease);
    let policy = Policy::builder()
        .refresh_interval(Duration::from_secs(60))
        .expiry_margin(margin)
        .build()
        .expect("policy");
    let credentials = RotatingCredentials::new(MemorySource::new(credential), policy)
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(&pg, credentials, 1).await;
    let first = whoami::<A>(&pool).await.pid;

    wait_closed(
        &pg,
        &role,
        Some(first),
        lease - Duration::from_millis(500) - started.elapsed(),
        "the idle leased connection is closed before its credential expires",
    )
    .await;
    let retired_after = started.elapsed();
    assert!(
        retired_after >= lease - margin - Duration::from_millis(200),
        "closed {retired_after:?} after the lease began, before its retirement point"
    );
    let second = whoami::<A>(&pool).await.pid;
    assert_ne!(second, first);
    assert_eq!(
        whoami::<A>(&pool).await.pid,
        second,
        "a connection opened after the retirement point is kept"
    );
    let stats = rotation.stats();
    assert!(
        stats.stale_closed >= 1 && stats.stale_closed_idle >= 1,
        "{stats:?}"
    );
    eprintln!(
        "{}: the leased connection was retired {retired_after:?} into a {lease:?} lease",
        A::NAME
    );
}

/// Dropping the pool, its `Rotation` and the provider ends every task: the role's sessions
/// leave `pg_stat_activity`, every connection is counted gone, and the store is asked no more.
pub async fn dropping_the_pool_stops_every_task<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let policy = Policy::builder()
        .refresh_interval(Duration::from_millis(100))
        .build()
        .expect("policy");
    let (role, _, store, credentials) = single_role(&pg, policy).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 2).await;
    drop(hold::<A>(&pool, 2).await);
    // A rotation with a connection out, so that the adapter has stale work in progress.
    let mut busy = checkout::<A>(&pool).await;
    who(&mut busy).await;
    rotate_single(&pg, &role, &store, &credentials).await;
    drop(busy);
    assert_eq!(whoami::<A>(&pool).await.user, role);
    let counters = Arc::clone(credswap_core::contract::Adapter::of(&rotation).counters());

    let before = store.fetch_count();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        store.fetch_count() > before,
        "the provider refreshes on its schedule while the pool lives"
    );
    // The drain may have closed every connection of the old login meanwhile: use the pool once
    // more, so that it holds a session when it is dropped.
    assert_eq!(whoami::<A>(&pool).await.user, role);
    assert!(!session_pids(&pg, &role).await.is_empty());

    drop((pool, rotation, credentials));
    wait_closed(
        &pg,
        &role,
        None,
        Duration::from_secs(2),
        "the role's sessions leave pg_stat_activity once the pool is dropped",
    )
    .await;
    wait_for(
        "every connection is counted gone (its task ended)",
        Duration::from_secs(2),
        || counters.live_total() == 0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let settled = store.fetch_count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        store.fetch_count(),
        settled,
        "the store is still asked after the pool and every handle were dropped: a task outlives the pool"
    );
}

/// Through a rotation with refused logins and a wrong password, no password appears in the
/// `Debug` of the handle, its stats, the provider, a pool error, or the captured logs.
pub async fn nothing_prints_the_password<A: Adapter, R: Route>() {
    let logs = capture::start();
    let pg = R::postgres().await;
    let (role, first, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 2).await;
    let mut held = checkout::<A>(&pool).await;
    who(&mut held).await;

    // Single user with a lagging store: refused logins, a wait, a drain.
    let second = random_password();
    pg.set_password(&role, &second).await.expect("ALTER ROLE");
    let lagging_store = tokio::spawn({
        let (store, role, second) = (store.clone(), role.clone(), second.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            store.set(Credential::new(role, second));
        }
    });
    assert_eq!(whoami::<A>(&pool).await.user, role);
    lagging_store.await.expect("store task");
    drop(held);

    // A wrong password published: the database refuses it (the old sessions keep serving).
    let wrong = format!("wrong-{}", random_password());
    store.set(Credential::new(role.clone(), wrong.clone()));
    credentials.refresh().await.expect("refresh");
    let refused = match tokio::time::timeout(Duration::from_millis(800), A::checkout(&pool)).await {
        Ok(Ok(mut session)) => format!("{:?}", who(&mut session).await),
        Ok(Err(e)) => format!("{} {e:?}", error_chain(&*e)),
        Err(_) => String::new(),
    };
    wait_for(
        "the refused login reaches the provider's health",
        Duration::from_secs(3),
        || credentials.health().is_refused(),
    )
    .await;
    let stats = rotation.stats();
    assert!(stats.auth_failures >= 1, "{stats:?}");
    let text = logs.text();
    assert!(
        text.contains(&role),
        "the captured logs saw the refused logins, which name the role"
    );
    assert_no_secret(
        &[&first, &second, &wrong],
        &[
            ("the Rotation", format!("{rotation:?}")),
            ("the stats", format!("{stats:?}")),
            ("the provider", format!("{credentials:?}")),
            ("the health", format!("{:?}", credentials.health())),
            ("a pool error", refused),
            ("the logs", text),
        ],
    );
}
