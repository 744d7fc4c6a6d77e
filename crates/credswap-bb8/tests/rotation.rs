//! What is specific to bb8, against a real PostgreSQL with scram-sha-256 authentication. The
//! contract every adapter keeps is tested by the conformance suite (`tests/conformance.rs`).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use credswap_bb8::{Builder, Pool, RotatingConnectionManager, Rotation};
use credswap_core::{Credential, MemorySource, RotatingCredentials};
use credswap_testkit::harness::{
    manual_policy, postgres, postgres_alone, session_pids, single_role,
};
use credswap_testkit::{TestPostgres, random_password, unique_name};
use tokio::time::Instant;
use tokio_postgres::NoTls;

async fn pool(
    pg: &TestPostgres,
    credentials: RotatingCredentials,
    pool: bb8::Builder<RotatingConnectionManager<NoTls>>,
) -> (Pool<NoTls>, Rotation) {
    Builder::new(pg.base_config(), NoTls, credentials)
        .pool_builder(pool)
        .connection_timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("pool")
}

/// Rotates a single role: the database first, then the store, then the provider.
async fn rotate(
    pg: &TestPostgres,
    role: &str,
    store: &MemorySource,
    credentials: &RotatingCredentials,
) {
    let new_password = random_password();
    pg.set_password(role, &new_password).await.unwrap();
    store.set(Credential::new(role, new_password));
    credentials.refresh().await.unwrap();
}

async fn backend_pid(pool: &Pool<NoTls>) -> i32 {
    let client = pool.get().await.unwrap();
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Each idle connection's own task closes it when the generation changes: eight idle
/// connections, five rotations, each socket closed within milliseconds, where bb8's reaper
/// would take 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stale_connections_close_within_milliseconds_of_the_change() {
    let pg = postgres_alone().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = pool(&pg, credentials.clone(), bb8::Pool::builder().max_size(8)).await;
    let admin = pg.admin().await.unwrap();
    let (mut sockets_closed, mut backends_gone) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let mut held = Vec::new();
        for _ in 0..8 {
            let conn = pool.get().await.unwrap();
            conn.simple_query("SELECT 1").await.unwrap();
            held.push(conn);
        }
        let old = held[0].generation();
        assert!(held.iter().all(|c| c.generation() == old));
        drop(held);
        assert_eq!(pool.state().idle_connections, 8);
        assert_eq!(rotation.stats().live_per_generation.get(&old), Some(&8));
        let closed_before = rotation.stats().stale_closed_idle;

        let new_password = random_password();
        pg.set_password(&role, &new_password).await.unwrap();
        store.set(Credential::new(role.clone(), new_password));
        let started = Instant::now();
        credentials.refresh().await.unwrap();
        // Every socket of the old generation closed (their tasks ended). Polled without
        // sleeping: the timer's 1 ms granularity would be most of the measurement.
        while rotation.stats().live_per_generation.contains_key(&old) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                rotation.stats()
            );
            tokio::task::yield_now().await;
        }
        sockets_closed.push(started.elapsed());
        loop {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                    &[&role],
                )
                .await
                .unwrap()
                .get(0);
            if n == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{n} backends left"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        backends_gone.push(started.elapsed());
        assert_eq!(rotation.stats().stale_closed_idle - closed_before, 8);

        // bb8 still counts them until a checkout pops them: it refuses all eight without a
        // round trip and opens one connection with the new credential.
        assert_eq!(pool.state().connections, 8);
        let conn = pool.get().await.unwrap();
        assert_eq!(conn.generation(), credentials.generation());
        drop(conn);
        assert_eq!(pool.state().connections, 1);
    }
    eprintln!(
        "8 idle stale connections after a generation change: sockets closed after \
         {sockets_closed:?}, backends gone after {backends_gone:?}"
    );
    let worst = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    assert!(
        worst(&sockets_closed) < Duration::from_millis(100),
        "{sockets_closed:?}"
    );
    assert!(
        worst(&backends_gone) < Duration::from_secs(1),
        "{backends_gone:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_checkout_validation_a_busy_connection_is_never_closed_under_its_user() {
    let pg = postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let builder = bb8::Pool::builder().max_size(2).test_on_check_out(false);
    let (pool, rotation) = pool(&pg, credentials.clone(), builder).await;
    let busy = pool.get().await.unwrap();
    let busy_pid: i32 = busy
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    rotate(&pg, &role, &store, &credentials).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The manager cannot tell busy from idle without `is_valid`, so it closes nothing...
    busy.simple_query("SELECT 1").await.expect("still open");
    assert!(session_pids(&pg, &role).await.contains(&busy_pid));
    // ...until the connection is returned: `has_broken` still refuses it.
    drop(busy);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!session_pids(&pg, &role).await.contains(&busy_pid));
    assert_eq!(rotation.stats().stale_closed_idle, 0);
    assert_eq!(rotation.stats().stale_closed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_connections_close_on_rotation_unless_kept_open() {
    let pg = postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, _rotation) = pool(&pg, credentials.clone(), bb8::Pool::builder().max_size(2)).await;
    backend_pid(&pool).await; // a validated checkout
    let kept = pool.dedicated_connection().await.unwrap();
    assert!(kept.keep_open_on_rotation());
    let plain = pool.dedicated_connection().await.unwrap();

    rotate(&pg, &role, &store, &credentials).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    kept.simple_query("SELECT 1")
        .await
        .expect("kept open across the rotation");
    assert!(
        plain.is_closed(),
        "a dedicated connection looks idle and follows the credential"
    );
    assert!(!plain.keep_open_on_rotation());
}

/// A `MakeWriter` into a shared buffer, to read what the adapter logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// bb8 returns only `RunError::TimedOut` from `Pool::get`: the cause of a failing connect is in
/// the log, with the role, the SQLSTATE and the server's message, and no password: at `WARN`
/// at the first refused attempt, long before the timeout, and at `ERROR` when the connect gives
/// up at its deadline.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_connect_is_logged_once_because_bb8_reports_only_a_timeout() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    // The current-thread runtime runs bb8's connect tasks on this thread too.
    let _guard = tracing::subscriber::set_default(subscriber);
    let logged = |what: &str| {
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .find(|line| line.contains(what))
            .map(str::to_owned)
    };

    let pg = postgres().await;
    let role = unique_name("app");
    pg.create_login_role(&role, &random_password())
        .await
        .unwrap();
    let wrong = "wrong-Pa55word-must-not-print";
    let credentials = RotatingCredentials::new(
        MemorySource::new(Credential::new(role.clone(), wrong)),
        manual_policy(),
    )
    .await
    .unwrap();
    let timeout = Duration::from_millis(1500);
    let (pool, rotation) = Builder::new(pg.base_config(), NoTls, credentials.clone())
        .max_size(1)
        .connection_timeout(timeout)
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(drop) }
    });
    // The provider says at once that the database refuses the credential...
    let first = loop {
        if let Some(line) = logged("the database refuses the current credential") {
            break line;
        }
        assert!(started.elapsed() < timeout / 2, "nothing logged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        !waiting.is_finished(),
        "bb8 itself is still waiting for its timeout"
    );
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(err, bb8::RunError::TimedOut), "{err}");
    // ...and the contract's connector logs the connect that gave up, once, with the server's
    // answer (bb8 reports only a timeout to `Pool::get`).
    let last = loop {
        if let Some(line) = logged("connect failed until its deadline") {
            break line;
        }
        assert!(started.elapsed() < timeout * 2, "no failure logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(first.contains("WARN") && first.contains(&role), "{first}");
    assert!(last.contains("WARN") && last.contains(&role), "{last}");
    assert!(last.contains("28P01"), "{last}");
    assert!(last.contains("password authentication failed"), "{last}");
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text.lines()
            .filter(|line| line.contains("connect failed"))
            .count(),
        1,
        "a failed connect is logged once: {text}"
    );
    let everything = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(!everything.contains(wrong), "secret logged: {everything}");
    assert!(
        rotation.stats().connect_failures >= 1,
        "{:?}",
        rotation.stats()
    );
    assert!(credentials.health().is_refused());
}

// The pool is a bb8 pool of connections that deref to `tokio_postgres::Client`: code written
// for bb8-postgres compiles unchanged against a checked-out connection.
const _: () = {
    fn takes_client(_: &tokio_postgres::Client) {}
    fn takes_pool(_: &bb8::Pool<RotatingConnectionManager<NoTls>>) {}
    #[allow(dead_code)]
    async fn handler(pool: &Pool<NoTls>) -> Result<i32, Box<dyn std::error::Error>> {
        takes_pool(pool);
        let mut conn = pool.get().await?;
        takes_client(&conn);
        let tx = conn.transaction().await?;
        tx.commit().await?;
        let row = conn.query_one("SELECT 1", &[]).await?;
        Ok(row.get(0))
    }
    #[allow(dead_code)]
    async fn built(
        builder: Builder<NoTls>,
    ) -> Result<(Pool<NoTls>, Rotation), credswap_bb8::Error> {
        builder.build().await
    }
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_prints_its_generation_and_no_secret() {
    let pg = postgres().await;
    let (_, password, _, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, _rotation) = pool(&pg, credentials, bb8::Pool::builder().max_size(1)).await;
    let conn = pool.get().await.unwrap();
    let text = format!("{conn:?} {:?}", *conn);
    assert!(text.contains("generation"), "{text}");
    assert!(!text.contains(&password), "secret printed: {text}");
}
