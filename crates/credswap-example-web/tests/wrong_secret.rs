//! A wrong secret in the store, against a real PostgreSQL (scram-sha-256), for each pool:
//! `/health` turns 503 within a few seconds, says why without printing the secret, and every
//! request meanwhile is served (200) on the sessions opened with the last good credential;
//! fixing the store brings `/health` back to 200.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credswap::Credential;
use credswap_example_web::{PoolKind, Whoami};
use credswap_testkit::harness::{app_policy, postgres, single_role};
use credswap_testkit::random_password;
use credswap_testkit::scenario::Strategy;

use common::App;

/// The pool's size, and the HTTP clients sending requests throughout.
const POOL: usize = 4;
const CLIENTS: usize = 4;

/// What the clients saw: every answer's status, and the sessions that served the 200s.
#[derive(Default)]
struct Served {
    statuses: Vec<(u16, String)>,
    pids: HashSet<i32>,
    users: HashSet<String>,
}

async fn wrong_secret_turns_health_503_and_requests_keep_being_served(kind: PoolKind) {
    let pg = postgres().await;
    let (role, good, store, credentials) = single_role(&pg, app_policy(Strategy::SingleUser)).await;
    let app = Arc::new(App::start(&pg, kind, credentials.clone(), POOL).await);

    // The pool's sessions, opened with the good credential: POOL requests at once, each holding
    // its connection for a moment.
    let warm = futures_join((0..POOL).map(|_| {
        let app = Arc::clone(&app);
        async move { app.get("/query?sleep_ms=200").await }
    }))
    .await;
    let mut before = HashSet::new();
    for answer in warm {
        let (status, body) = answer.expect("GET /query");
        assert_eq!(status, 200, "{kind}: {body}");
        before.insert(serde_json::from_str::<Whoami>(&body).unwrap().backend_pid);
    }
    let (status, body) = app.health().await;
    assert_eq!(status, 200, "{kind}: {body}");

    // Requests keep coming while the store holds the mistake.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(Mutex::new(Served::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (app, stop, served) = (Arc::clone(&app), Arc::clone(&stop), Arc::clone(&served));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answer = app.get("/query?sleep_ms=5").await;
                    let mut served = served.lock().unwrap();
                    match answer {
                        Ok((200, body)) => {
                            let whoami: Whoami = serde_json::from_str(&body).unwrap();
                            served.pids.insert(whoami.backend_pid);
                            served.users.insert(whoami.user);
                            served.statuses.push((200, String::new()));
                        }
                        Ok((status, body)) => served.statuses.push((status, body)),
                        Err(e) => served.statuses.push((0, e.to_string())),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The mistake: the store publishes a password the database does not know. Nobody tells the
    // application; its provider reads the store every 250 ms.
    let wrong = format!("wrong-{}", random_password());
    store.set(Credential::new(role.clone(), wrong.clone()));
    let published = Instant::now();
    let (status, body) = loop {
        let (status, body) = app.health().await;
        if status == 503 {
            break (status, body);
        }
        assert!(
            published.elapsed() < Duration::from_secs(6),
            "{kind}: /health still {status} 6 s after the wrong secret: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = published.elapsed();
    // Requests go on for a while with /health at 503.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status_later, _) = app.health().await;
    let metrics = app.get("/metrics").await.expect("GET /metrics").1;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    assert_eq!(status, 503);
    assert_eq!(status_later, 503, "{kind}: /health stays 503 while refused");
    assert_eq!(body["status"], "unavailable", "{kind}: {body}");
    assert_eq!(
        body["reasons"],
        serde_json::json!(["refused"]),
        "{kind}: {body}"
    );
    assert_eq!(
        body["credential"]["generation"].as_u64(),
        Some(2),
        "{kind}: the wrong secret is the current generation: {body}"
    );
    assert!(
        body["credential"]["refused_logins"].as_u64() >= Some(1),
        "{kind}: {body}"
    );
    let text = body.to_string();
    assert!(
        !text.contains(&wrong) && !text.contains(&good),
        "{kind}: /health shows a secret"
    );
    assert!(
        !metrics.contains(&wrong) && !metrics.contains(&good),
        "{kind}: /metrics shows a secret"
    );
    assert!(
        metrics.contains("credswap_credential_refused{provider=\"main\"} 1"),
        "{kind}: /metrics says the credential is refused:\n{metrics}"
    );

    let served = std::mem::take(&mut *served.lock().unwrap());
    let failed: Vec<_> = served.statuses.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{kind}: {} of {} requests failed during the mistake: {:?}",
        failed.len(),
        served.statuses.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        served.statuses.len() >= 50,
        "{kind}: {} requests",
        served.statuses.len()
    );
    assert_eq!(served.users, HashSet::from([role.clone()]), "{kind}");
    assert!(
        served.pids.iter().any(|pid| before.contains(pid)),
        "{kind}: the sessions opened with the good credential kept serving: before {before:?}, \
         served {:?}",
        served.pids
    );
    eprintln!(
        "{kind}: /health 503 {} ms after the wrong secret; {} requests served, 0 failed, by {} \
         sessions ({} opened before the mistake); {:?}",
        took.as_millis(),
        served.statuses.len(),
        served.pids.len(),
        served.pids.intersection(&before).count(),
        app.state.database().rotation().stats()
    );

    // The store is fixed: /health is 200 again, and requests are still served.
    store.set(Credential::new(role.clone(), good));
    let fixed = Instant::now();
    loop {
        let (status, body) = app.health().await;
        if status == 200 {
            break;
        }
        assert!(
            fixed.elapsed() < Duration::from_secs(3),
            "{kind}: /health still {status} 3 s after the fix: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = app.get("/query").await.unwrap();
    assert_eq!(status, 200, "{kind}: {body}");
    Arc::into_inner(app)
        .expect("the clients are done")
        .stop()
        .await;
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_a_wrong_secret_turns_health_503_and_requests_keep_being_served() {
    wrong_secret_turns_health_503_and_requests_keep_being_served(PoolKind::Deadpool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_a_wrong_secret_turns_health_503_and_requests_keep_being_served() {
    wrong_secret_turns_health_503_and_requests_keep_being_served(PoolKind::Bb8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_a_wrong_secret_turns_health_503_and_requests_keep_being_served() {
    wrong_secret_turns_health_503_and_requests_keep_being_served(PoolKind::Sqlx).await;
}
