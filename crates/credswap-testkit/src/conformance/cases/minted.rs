//! Minted credentials (RDS IAM and DSQL tokens) and the pool's limits beside `max_size`: a new
//! token retires no session, a session never outlives the pool's maximum age, and connect
//! pacing caps the logins the server sees in any second.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use credswap_core::contract::Rotation;
use credswap_core::contract::limits::SessionLimits;
use credswap_core::{Generation, Policy, RotatingCredentials};
use tokio::time::Instant;

use super::super::{Adapter, Route};
use super::helpers::*;
use crate::harness::{error_chain, single_role};
use crate::{TestPostgres, TokenGate, most_in_any, unique_name};

/// [`Adapter::build_limited`], panicking with the adapter's name and the error.
async fn build_limited<A: Adapter>(
    pg: &TestPostgres,
    credentials: RotatingCredentials,
    max_size: usize,
    limits: SessionLimits,
) -> (A::Pool, Rotation) {
    match A::build_limited(pg, credentials, max_size, limits).await {
        Ok(built) => built,
        Err(e) => panic!(
            "{}: building the pool with {limits:?} failed: {}",
            A::NAME,
            error_chain(&*e)
        ),
    }
}

/// A session seen in `pg_stat_activity`: when it started, and when it was last seen.
#[derive(Debug, Clone, Copy)]
struct Seen {
    started: SystemTime,
    last: SystemTime,
}

/// Samples the sessions of `role` every 50 ms until `stop`: every session seen (by pid and
/// start), and the most seen at once.
async fn watch_sessions(
    pg: &TestPostgres,
    role: &str,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(HashMap<(i32, SystemTime), Seen>, usize)> {
    let admin = pg.admin().await.expect("admin connection");
    let role = role.to_owned();
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        let mut seen: HashMap<(i32, SystemTime), Seen> = HashMap::new();
        let mut most = 0;
        while !stop.load(Ordering::Relaxed) {
            let rows = admin
                .query(
                    "SELECT pid, backend_start, now() FROM pg_stat_activity \
                     WHERE usename = $1 AND backend_start IS NOT NULL",
                    &[&role],
                )
                .await
                .expect("pg_stat_activity");
            most = most.max(rows.len());
            for row in rows {
                let (pid, started, now): (i32, SystemTime, SystemTime) =
                    (row.get(0), row.get(1), row.get(2));
                seen.entry((pid, started))
                    .and_modify(|s| s.last = now)
                    .or_insert(Seen { started, last: now });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (seen, most)
    })
}

/// Tokens minted by a [`TokenGate`] every 2 s (3-s tokens, 1-s margin; only the newest token
/// logs in) while 4 workers run requests through a pool of 4 for 60 s (each 20 ms apart: the
/// case shares the machine with the light cases): not one request fails,
/// the generation never moves, no session is closed for a new token, and no login reaches the
/// server with a token inside its margin (the gate expires each token's password half-way
/// through its margin). So that new connects happen at every point of a token's life, the pool
/// retires its sessions at 7 s (`max_session_age`): every close is then one of those, and every
/// session lives at least the jittered 7 s.
///
/// Straight to the server only: the gate refuses the previous token the moment it installs
/// the next, and PgBouncer logs in to the server with the SCRAM keys of the client that asked,
/// so a server login that raced a new token locks the pooler's logins for its
/// `server_login_retry` (one CI run failed 72 requests so). RDS takes any unexpired token,
/// and IAM authentication does not pass through PgBouncer in the first place.
pub async fn minted_tokens_refresh_under_load_without_closing_a_session<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let role = unique_name("minted");
    let margin = Duration::from_secs(1);
    let gate = TokenGate::new(&pg, &role, Duration::from_secs(3), margin)
        .await
        .expect("token gate");
    let policy = Policy::builder()
        .expiry_margin(margin)
        .refresh_interval(Duration::from_secs(300))
        .build()
        .expect("policy");
    let credentials = RotatingCredentials::new(gate.clone(), policy)
        .await
        .expect("provider over the token gate");
    let max_age = Duration::from_secs(7);
    let (pool, rotation) = build_limited::<A>(
        &pg,
        credentials.clone(),
        4,
        SessionLimits::default().max_session_age(max_age),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let sessions = watch_sessions(&pg, &role, &stop).await;
    let load = load_with_pause::<A>(&pool, 4, Duration::from_millis(20), &stop);
    tokio::time::sleep(Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, first) = load.await.expect("load");
    let (seen, _) = sessions.await.expect("session watcher");
    let stats = rotation.stats();
    let provider = credentials.stats();
    let summary = format!(
        "{}: {ok} ok, {failed} failed (first: {first:?}); {} tokens minted; provider {provider:?}; adapter {stats:?}",
        A::NAME,
        gate.minted()
    );
    assert_eq!(failed, 0, "{summary}");
    assert!(ok > 1000, "{summary}");
    assert!(
        (25..=40).contains(&provider.token_refreshes),
        "a token every 2 s for 60 s: {summary}"
    );
    assert_eq!(
        provider.rotations, 0,
        "a new token is no rotation: {summary}"
    );
    assert_eq!(credentials.generation(), Generation::FIRST, "{summary}");
    assert_eq!(
        stats.stale_closed, stats.aged_out,
        "every session closed was closed for its age, none for a token: {summary}"
    );
    assert!(
        stats.aged_out >= 4,
        "the sessions were replaced at their age (new connects at every point of a token's life): {summary}"
    );
    assert_eq!(
        pg.expired_logins(&role),
        Some(0),
        "a login reached the server with a token inside its margin: {summary}"
    );
    if pg.pooler().is_none() {
        // Sessions that ended during the run: none younger than the jittered session age less
        // the sampling interval.
        let shortest = seen
            .values()
            .filter(|s| s.last + Duration::from_secs(1) < SystemTime::now())
            .map(|s| s.last.duration_since(s.started).unwrap_or_default())
            .min();
        let floor = max_age.mul_f64(0.9) - Duration::from_millis(200);
        assert!(
            shortest.is_some_and(|age| age >= floor),
            "a session ended after {shortest:?}, before the session age ({floor:?} at least): \
             closed for a token? {summary}"
        );
    }
    eprintln!("{summary}");
}

/// A pool of 4 with `max_session_age` 3 s under 6 workers for 12 s: no session of the pool is
/// older than 3 s and one query (checked every 50 ms in `pg_stat_activity`), never more than 4
/// at once, not one request fails, and every session was replaced at least once.
pub async fn max_session_age_retires_sessions_within_the_pool_size<A: Adapter, R: Route>() {
    let pg = R::postgres_alone().await;
    let (role, _, _, credentials) = single_role(&pg, crate::harness::manual_policy()).await;
    let max_age = Duration::from_secs(3);
    let max_size = 4;
    let (pool, rotation) = build_limited::<A>(
        &pg,
        credentials,
        max_size,
        SessionLimits::default().max_session_age(max_age),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let sessions = watch_sessions(&pg, &role, &stop).await;
    let load = load::<A>(&pool, 6, &stop);
    let started = Instant::now();
    let mut peak_pool = 0;
    while started.elapsed() < Duration::from_secs(12) {
        peak_pool = peak_pool.max(A::size(&pool));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, first) = load.await.expect("load");
    let (seen, most) = sessions.await.expect("session watcher");
    let stats = rotation.stats();
    let oldest = seen
        .values()
        .map(|s| s.last.duration_since(s.started).unwrap_or_default())
        .max()
        .unwrap_or_default();
    let summary = format!(
        "{}: {ok} ok, {failed} failed (first: {first:?}); {} sessions, oldest {oldest:?}, \
         {most} at once, pool peak {peak_pool}; {stats:?}",
        A::NAME,
        seen.len()
    );
    assert_eq!(failed, 0, "{summary}");
    // One query here is a few milliseconds; the rest is the drain's sweep and the machine.
    assert!(
        oldest <= max_age + Duration::from_millis(600),
        "a session outlived the pool's session age: {summary}"
    );
    assert!(most <= max_size, "more sessions than max_size: {summary}");
    assert!(peak_pool <= max_size, "{summary}");
    assert!(
        stats.aged_out >= 8,
        "12 s of 3-s sessions: each of the first ones replaced: {summary}"
    );
    assert!(seen.len() >= 12, "{summary}");
    eprintln!("{summary}");
}

/// A pool of 10 whose sessions age out every 400 ms (25 reconnects a second unpaced) with
/// `max_connects_per_second` 20, under 10 workers for 6 s: the server log never shows more than
/// 20 logins of the pool's role in any second, and not one request fails.
pub async fn connect_pacing_caps_logins_per_second<A: Adapter, R: Route>() {
    let pg = R::postgres_alone().await;
    let (role, _, _, credentials) = single_role(&pg, crate::harness::manual_policy()).await;
    let per_second = 20;
    let (pool, rotation) = build_limited::<A>(
        &pg,
        credentials,
        10,
        SessionLimits::default()
            .max_session_age(Duration::from_millis(400))
            .max_connects_per_second(per_second),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = load::<A>(&pool, 10, &stop);
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, first) = load.await.expect("load");
    let stats = rotation.stats();
    let Some(logins) = pg.logins(&role) else {
        panic!("the server's log is not readable here: this case needs a server the kit started");
    };
    let busiest = most_in_any(&logins, Duration::from_secs(1));
    let summary = format!(
        "{}: {ok} ok, {failed} failed (first: {first:?}); {} logins, at most {busiest} in a second; {stats:?}",
        A::NAME,
        logins.len()
    );
    assert_eq!(failed, 0, "{summary}");
    assert!(
        busiest <= per_second as usize,
        "more logins in a second than the pace allows: {summary}"
    );
    if pg.pooler().is_none() {
        assert!(
            logins.len() >= 40 && stats.paced_logins > 0,
            "the sessions aged out and their logins were paced: {summary}"
        );
    }
    eprintln!("{summary}");
}

/// A credential that must travel over TLS (an IAM token,
/// [`Credential::with_tls_required`](credswap_core::Credential::with_tls_required)): building a
/// pool whose connect options could log in without TLS is refused, as a configuration error
/// that names the setting and never the token.
pub async fn a_login_that_requires_tls_refuses_a_pool_without_it<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let token = crate::random_password();
    let store = credswap_core::MemorySource::new(
        credswap_core::Credential::minted("iam_app", token.clone()).with_tls_required(),
    );
    let credentials = RotatingCredentials::new(store, crate::harness::manual_policy())
        .await
        .expect("provider");
    let error = match A::build(&pg, credentials, 2).await {
        Ok(_) => panic!(
            "{}: a pool without TLS was built for a login that requires TLS",
            A::NAME
        ),
        Err(e) => error_chain(&*e),
    };
    assert!(
        error.contains("requires TLS") && error.contains("sslmode=require"),
        "{}: the error says what to set: {error}",
        A::NAME
    );
    assert!(!error.contains(&token), "{}: the token printed", A::NAME);
}
