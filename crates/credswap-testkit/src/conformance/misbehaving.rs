//! The store misbehaves: rotations that go wrong (stuck, reverted, retried with another
//! value) and stores that are slow or throttle.
//!
//! One rule for all of them: credswap never fails more requests, and never sends the database
//! more refused logins, than a plain pool configured with the store's current value would, and
//! it returns to serving from the store's working value by itself, within the pool's timeout
//! plus a refresh interval. The store here is the in-memory one ([`MemorySource`]), which has a
//! pending credential like Secrets Manager's `AWSPENDING`, outages, delays and throttling; the
//! database is a real PostgreSQL (and PgBouncer), and refused logins are counted where they
//! were refused ([`TestPostgres::refused_logins`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use credswap_core::{Credential, Policy, RotatingCredentials};
use tokio::time::Instant;

use super::cases::{build, load, wait_for, whoami};
#[cfg(feature = "aws")]
use super::store::secrets_manager_role;
use super::store::{Memory, Store};
use super::{Adapter, Route};
use crate::harness::{error_chain, single_role};
use crate::{TestPostgres, random_password};

/// The pools' checkout timeout in the suite ([`Adapter::build`]: about 10 s).
const POOL_TIMEOUT: Duration = Duration::from_secs(10);

/// Refused logins of `role` so far (server and pooler logs).
fn refused(pg: &TestPostgres, role: &str) -> usize {
    pg.refused_logins(role)
        .expect("the test kit's own server (its log is where refused logins are counted)")
}

/// Checks that the pool serves `role`. Behind PgBouncer, a password change makes the bouncer's
/// own server logins fail for its `server_login_retry` (a plain pool sees the same), so a few
/// seconds of that are allowed there.
async fn serves<A: Adapter>(pg: &TestPostgres, pool: &A::Pool, role: &str) {
    let limit = Instant::now()
        + if pg.pooler().is_some() {
            crate::TestPgBouncer::SERVER_LOGIN_RETRY + Duration::from_secs(3)
        } else {
            Duration::ZERO
        };
    loop {
        match A::whoami(pool).await {
            Ok(me) => {
                assert_eq!(me.user, role);
                return;
            }
            Err(e) if Instant::now() < limit => {
                tracing::debug!(error = %error_chain(&*e), "not serving yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "{}: checkout and query failed: {}",
                A::NAME,
                error_chain(&*e)
            ),
        }
    }
}

/// A policy for these cases: a short cache TTL so the store's changes arrive within a second.
fn policy(refresh: Duration) -> Policy {
    Policy::builder()
        .refresh_interval(refresh)
        .backoff(Duration::from_millis(100), Duration::from_secs(2))
        .build()
        .expect("valid policy")
}

/// A rotation dies after createSecret (its setSecret failed): the store keeps a pending
/// version the database never accepted, for as long as nobody cleans it up. The pools' trials
/// within the policy's `pending_trial_window` log in with the current login first (accepted),
/// then the pools leave it alone: no request fails, no refused login, and `health()` says the
/// rotation is stuck.
pub async fn a_stuck_pending_version_fails_nothing_and_stops_being_tried<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let (role, _, store, credentials) = single_role(&pg, stuck_policy()).await;
    stuck_pending::<A>(&pg, &role, &Memory(store), credentials).await;
}

/// [`a_stuck_pending_version_fails_nothing_and_stops_being_tried`] on a real Secrets Manager
/// API (moto): a version staged `AWSPENDING` that the database never got, read through
/// `credswap-aws` (`DescribeSecret` says the secret is rotating).
#[cfg(feature = "aws")]
pub async fn a_stuck_awspending_on_secrets_manager_fails_nothing<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let (role, _, store, credentials) = secrets_manager_role(&pg, stuck_policy()).await;
    stuck_pending::<A>(&pg, &role, &store, credentials).await;
}

/// The trial window of the stuck-pending cases: 5 s, so that a case sees it end.
const STUCK_WINDOW: Duration = Duration::from_secs(5);

fn stuck_policy() -> Policy {
    Policy::builder()
        .refresh_interval(Duration::from_millis(500))
        .pending_trial_window(STUCK_WINDOW)
        .build()
        .expect("valid policy")
}

async fn stuck_pending<A: Adapter>(
    pg: &TestPostgres,
    role: &str,
    store: &dyn Store,
    credentials: RotatingCredentials,
) {
    let (role, window) = (role.to_owned(), STUCK_WINDOW);
    let (pool, rotation) = build::<A>(pg, credentials.clone(), 4).await;
    let generation = credentials.generation();
    let stop = Arc::new(AtomicBool::new(false));
    let loaded = load::<A>(&pool, 8, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = refused(pg, &role);
    let calls_before = credentials.stats().store_calls;

    // createSecret, then setSecret fails: the database never gets the pending password.
    store
        .stage_pending(&Credential::new(role.clone(), random_password()))
        .await;
    let started = Instant::now();
    tokio::time::sleep(window + Duration::from_secs(1)).await;
    let in_window = refused(pg, &role) - before;
    // As long again: nothing more is tried.
    tokio::time::sleep(window).await;
    let after_window = refused(pg, &role) - before - in_window;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, first) = loaded.await.expect("load");
    let stats = rotation.stats();
    let calls = credentials.stats().store_calls - calls_before;
    let summary = format!(
        "{} on {}: {ok} ok, {failed} failed (first: {first:?}); refused logins {in_window} in \
         the trial window, {after_window} after it; {calls} store calls in {elapsed:?}; {stats:?}",
        A::NAME,
        store.name()
    );
    eprintln!("{summary}");
    assert_eq!(failed, 0, "{summary}");
    assert!(ok > 100, "{summary}");
    // A trial logs in with the current login first and tries the pending one only when the
    // database refuses the current one: a pending version the database never got costs no
    // refused login, as for a plain pool.
    assert_eq!(
        in_window, 0,
        "a stuck pending version costs no refused login: {summary}"
    );
    assert_eq!(
        after_window, 0,
        "no refused login once the pending version is older than the trial window: {summary}"
    );
    let health = credentials.health();
    assert!(
        health.is_rotation_stuck(),
        "health says the rotation is stuck: {health:?}"
    );
    assert_eq!(credentials.generation(), generation, "{summary}");
    assert_eq!(whoami::<A>(&pool).await.user, role);
    // The refresher reads the current and the pending version every 500 ms; refused logins add
    // no burst of store calls.
    let per_second = calls as f64 / elapsed.as_secs_f64();
    assert!(
        per_second <= 6.0,
        "{per_second:.1} store calls/s: {summary}"
    );
}

/// A single-user rotation is reverted after setSecret: the pools had adopted the pending
/// password and moved their sessions to it, then the operator puts the old one back in the
/// database and removes the pending version. The store's value wins back (although it equals
/// the credential the pending one replaced): no refused login after the revert plus one
/// refresh interval, and sessions terminated every 2 s cost only the requests in flight on
/// them.
pub async fn a_reverted_rotation_is_followed_back_without_a_restart<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let (role, old_password, store, credentials) = single_role(&pg, policy(REVERT_REFRESH)).await;
    let store = Memory(store);
    reverted::<A>(
        &pg,
        &role,
        &old_password,
        &store,
        credentials,
        Revert::OnceThePoolMoved,
    )
    .await;
}

/// [`a_reverted_rotation_is_followed_back_without_a_restart`] on a real Secrets Manager API
/// (moto): the operator removes `AWSPENDING` from the version the pools had adopted.
#[cfg(feature = "aws")]
pub async fn a_reverted_rotation_on_secrets_manager_is_followed_back<A: Adapter, R: Route>() {
    reverted_on_secrets_manager::<A, R>(Revert::OnceThePoolMoved).await;
}

/// [`a_reverted_rotation_on_secrets_manager_is_followed_back`], reverted the moment the
/// provider adopts the pending password, while the pool is still closing the sessions of the
/// old one: the slots it refills after the revert are opened with the pending password, which
/// the database refuses again, and the checkouts that wait for them must get the store's value
/// instead, not the refusal.
#[cfg(feature = "aws")]
pub async fn a_rotation_reverted_while_the_pool_moves_is_followed_back<A: Adapter, R: Route>() {
    reverted_on_secrets_manager::<A, R>(Revert::WhileThePoolMoves).await;
}

#[cfg(feature = "aws")]
async fn reverted_on_secrets_manager<A: Adapter, R: Route>(revert: Revert) {
    let pg = R::postgres().await;
    let (role, old_password, store, credentials) =
        secrets_manager_role(&pg, policy(REVERT_REFRESH)).await;
    reverted::<A>(&pg, &role, &old_password, &store, credentials, revert).await;
}

/// The cache TTL of the revert cases: refused logins must end within it after the revert.
const REVERT_REFRESH: Duration = Duration::from_secs(1);

/// When the operator reverts a rotation the pools have adopted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Revert {
    /// Once every session of the pool is on the pending password.
    OnceThePoolMoved,
    /// The moment the provider adopts it, the pool's sessions still on the old one.
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    WhileThePoolMoves,
}

async fn reverted<A: Adapter>(
    pg: &TestPostgres,
    role: &str,
    old_password: &str,
    store: &dyn Store,
    credentials: RotatingCredentials,
    revert: Revert,
) {
    let (role, old_password, refresh) = (role.to_owned(), old_password.to_owned(), REVERT_REFRESH);
    let (pool, rotation) = build::<A>(pg, credentials.clone(), 4).await;
    assert_eq!(whoami::<A>(&pool).await.user, role);
    let stop = Arc::new(AtomicBool::new(false));
    let loaded = load::<A>(&pool, 8, &stop);

    for round in 1..=2 {
        // createSecret + setSecret: the pools adopt the pending password.
        let generation = credentials.generation();
        let new_password = random_password();
        store
            .stage_pending(&Credential::new(role.clone(), new_password.clone()))
            .await;
        pg.set_password(&role, &new_password)
            .await
            .expect("ALTER ROLE");
        wait_for(
            "the pools adopt the pending password the database has",
            Duration::from_secs(8),
            || credentials.generation() > generation && credentials.current().is_proven(),
        )
        .await;
        if revert == Revert::OnceThePoolMoved {
            let adopted = credentials.generation();
            wait_for(
                "every session of the pool is on the pending password",
                Duration::from_secs(8),
                || {
                    let live = rotation.stats().live_per_generation;
                    !live.is_empty() && live.keys().all(|g| *g >= adopted)
                },
            )
            .await;
        }

        // The operator reverts: the database has the old password again, AWSPENDING is gone.
        pg.set_password(&role, &old_password)
            .await
            .expect("ALTER ROLE");
        store.drop_pending().await;
        let reverted = Instant::now();
        tokio::time::sleep(refresh + Duration::from_millis(500)).await;
        let settled = refused(pg, &role);
        let mut terminated = 0;
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            terminated += pg.terminate_sessions(&role).await.expect("terminate");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let late = refused(pg, &role) - settled;
        let current = credentials.current();
        let summary = format!(
            "{} on {} (round {round}): {late} refused logins after the revert + {refresh:?}, \
             {terminated} sessions terminated, {:?} since the revert; {:?}",
            A::NAME,
            store.name(),
            reverted.elapsed(),
            rotation.stats()
        );
        eprintln!("{summary}");
        assert_eq!(late, 0, "the store's working value won back: {summary}");
        assert!(
            current
                .credential()
                .is_same_login(&Credential::new(role.clone(), old_password.clone()))
                && current.is_proven(),
            "the provider serves the store's value again: {summary}"
        );
        assert_eq!(whoami::<A>(&pool).await.user, role);
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, first) = loaded.await.expect("load");
    // Each termination can fail the request in flight on each of the pool's 4 sessions, and
    // one more checkout of each before the pool sees its socket closed (deadpool's fast
    // recycling does not ping; behind PgBouncer the client connection closes a moment after
    // its server session): what a plain pool fails too.
    let per_session = 2;
    eprintln!("{}: {failed} of {} requests failed", A::NAME, ok + failed);
    if pg.pooler().is_some() {
        // PgBouncer (auth_query pass-through) logs its new server sessions in with the SCRAM
        // keys it cached from its first client of the role; after a password change and a
        // terminated server session it fails every query of that role with "server login has
        // been failing" for its server_login_retry, whatever the pool in front does (a plain
        // pool sees the same). The refused-login and recovery checks above hold there too.
        assert!(ok > 100, "{}: only {ok} requests ran", A::NAME);
        return;
    }
    assert!(
        failed <= 2 * 3 * 4 * per_session,
        "{}: {failed} of {} requests failed (first: {first:?}); {:?}",
        A::NAME,
        ok + failed,
        rotation.stats()
    );
    assert!(ok > 100, "{}: only {ok} requests ran", A::NAME);
}

/// A rotation is retried with a new token while the pools try its first value: `AWSPENDING`
/// moves to another login, which the database does not have. Whatever the pools proved, the
/// provider never publishes a login the database has not accepted; once the store and the
/// database agree again, the pools follow.
pub async fn a_pending_version_moved_mid_trial_is_never_published_unproven<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let (role, _, store, credentials) = single_role(&pg, policy(Duration::from_millis(300))).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    assert_eq!(whoami::<A>(&pool).await.user, role);
    let stop = Arc::new(AtomicBool::new(false));
    let loaded = load::<A>(&pool, 8, &stop);

    for (round, delay_ms) in [0u64, 150, 400, 900].into_iter().enumerate() {
        let first_try = random_password();
        store.set_pending(Some(Credential::new(role.clone(), first_try.clone())));
        pg.set_password(&role, &first_try)
            .await
            .expect("ALTER ROLE");
        // While the pools try it (a trial or a probe in flight), the store moves on.
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let second_try = random_password();
        let moved = Credential::new(role.clone(), second_try.clone());
        store.set_pending(Some(moved.clone()));
        let watch_until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < watch_until {
            let current = credentials.current();
            assert!(
                !current.credential().is_same_login(&moved),
                "{} (round {round}): the moved pending login was published though the \
                 database never accepted it; {:?}",
                A::NAME,
                rotation.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The retried rotation completes: the database and the store agree on the new value.
        pg.set_password(&role, &second_try)
            .await
            .expect("ALTER ROLE");
        store.set(moved.clone());
        store.set_pending(None);
        wait_for(
            "the pools follow the completed rotation",
            POOL_TIMEOUT,
            || {
                let current = credentials.current();
                current.credential().is_same_login(&moved) && current.is_proven()
            },
        )
        .await;
        serves::<A>(&pg, &pool, &role).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, first) = loaded.await.expect("load");
    eprintln!(
        "{}: {ok} ok, {failed} failed (first: {first:?}); {:?}",
        A::NAME,
        rotation.stats()
    );
    assert!(ok > 100, "{}: only {ok} requests ran", A::NAME);
}

/// The store stops answering (black-holed) while a single-user rotation has changed the
/// database's password: every checkout returns, one way or the other, within the pool's
/// timeout (no connect waits on the store past its deadline), and once the store answers
/// again with the new password the pool serves within the pool's timeout plus the fetch
/// timeout.
pub async fn a_black_holed_store_bounds_every_checkout<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let fetch_timeout = Duration::from_secs(2);
    let policy = Policy::builder()
        .refresh_interval(Duration::from_secs(1))
        .fetch_timeout(fetch_timeout)
        .build()
        .expect("valid policy");
    let (role, _, store, credentials) = single_role(&pg, policy).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    assert_eq!(whoami::<A>(&pool).await.user, role);

    store.set_delay(Duration::from_secs(3600));
    let new_password = random_password();
    pg.set_password(&role, &new_password)
        .await
        .expect("ALTER ROLE");
    pg.terminate_sessions(&role).await.expect("terminate");
    let started = Instant::now();
    let checkouts: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let began = Instant::now();
                let result = A::whoami(&pool).await.map_err(|e| error_chain(&*e));
                (began.elapsed(), result)
            })
        })
        .collect();
    let mut longest = Duration::ZERO;
    for checkout in checkouts {
        let (took, result) = checkout.await.expect("checkout task");
        longest = longest.max(took);
        if let Err(e) = result {
            assert!(
                !e.contains(&new_password),
                "an error printed the password: {}",
                e.replace(&new_password, "<the password>")
            );
        }
    }
    eprintln!(
        "{}: with the store black-holed, the slowest of 8 checkouts returned after {longest:?}; {:?}",
        A::NAME,
        rotation.stats()
    );
    assert!(
        longest <= POOL_TIMEOUT + Duration::from_secs(2),
        "{}: a checkout took {longest:?} with the store black-holed (pool timeout {POOL_TIMEOUT:?})",
        A::NAME
    );

    // The store answers again, with the new password.
    store.set_delay(Duration::ZERO);
    store.set(Credential::new(role.clone(), new_password));
    let recovered = Instant::now();
    let limit = POOL_TIMEOUT + fetch_timeout + Duration::from_secs(2);
    loop {
        match A::whoami(&pool).await {
            Ok(me) if me.user == role => break,
            Ok(me) => panic!("the session runs as {}", me.user),
            Err(e) => assert!(
                recovered.elapsed() < limit,
                "{}: not serving {limit:?} after the store came back: {}",
                A::NAME,
                error_chain(&*e)
            ),
        }
    }
    eprintln!(
        "{}: serving again {:?} after the store came back ({:?} in all)",
        A::NAME,
        recovered.elapsed(),
        started.elapsed()
    );
}

/// The store throttles half of its calls (`ThrottlingException`) through three single-user
/// rotations under load: no request fails, and the pool's store calls stay bounded (refusal
/// fetches back off with full jitter instead of coming every 200 ms).
pub async fn a_throttling_store_fails_no_request<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let (role, _, store, credentials) = single_role(&pg, policy(Duration::from_millis(500))).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    assert_eq!(whoami::<A>(&pool).await.user, role);
    store.throttle(0.5);
    let stop = Arc::new(AtomicBool::new(false));
    let loaded = load::<A>(&pool, 8, &stop);
    let started = Instant::now();
    let calls_before = credentials.stats().store_calls;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let generation = credentials.generation();
        let password = random_password();
        pg.set_password(&role, &password).await.expect("ALTER ROLE");
        store.set(Credential::new(role.clone(), password));
        wait_for(
            "the pool follows the rotation through the throttling store",
            POOL_TIMEOUT,
            || credentials.generation() > generation && credentials.current().is_proven(),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, first) = loaded.await.expect("load");
    let elapsed = started.elapsed();
    let calls = credentials.stats().store_calls - calls_before;
    let per_second = calls as f64 / elapsed.as_secs_f64();
    let summary = format!(
        "{}: {ok} ok, {failed} failed (first: {first:?}); {calls} store calls in {elapsed:?} \
         ({per_second:.1}/s, half of them throttled); {:?}; {:?}",
        A::NAME,
        credentials.stats(),
        rotation.stats()
    );
    eprintln!("{summary}");
    assert_eq!(failed, 0, "{summary}");
    assert!(ok > 100, "{summary}");
    assert!(per_second <= 10.0, "{summary}");
}

/// A Vault (OpenBao) dynamic role's lease is revoked from outside (`lease revoke -prefix`, a
/// database restore) and the pool's sessions are terminated, twice: the refused login makes the
/// source look its lease up and issue a new user, and the next checkout connects with it within
/// the pool's timeout; the provider serves the new user, never the revoked one.
#[cfg(feature = "vault")]
pub async fn a_vault_lease_revoked_from_outside_is_replaced<A: Adapter, R: Route>() {
    use credswap_vault::VaultSource;

    let pg = R::postgres().await;
    let bao = match crate::TestBao::start().await {
        Ok(bao) => bao,
        Err(e) => panic!("starting OpenBao (bao server -dev) failed: {e}"),
    };
    bao.enable_database(&pg)
        .await
        .expect("enable the database secrets engine");
    bao.create_dynamic_role("app", Duration::from_secs(60), Duration::from_secs(120))
        .await
        .expect("a dynamic role");
    let source = VaultSource::dynamic_role("database", "app")
        .address(bao.address())
        .token(bao.root_token().to_owned())
        .lease_margin(Duration::from_secs(10))
        .build()
        .expect("VaultSource");
    let policy = Policy::builder()
        .refresh_interval(Duration::from_secs(60))
        .expiry_margin(Duration::from_secs(5))
        .build()
        .expect("valid policy");
    let credentials = RotatingCredentials::new(source, policy)
        .await
        .expect("provider over OpenBao");
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    let mut user = whoami::<A>(&pool).await.user;
    for round in 1..=2 {
        // Vault drops the role: its sessions' `usename` turns NULL, so they are found first.
        let pids = crate::harness::session_pids(&pg, &user).await;
        bao.request("PUT", "sys/leases/revoke-prefix/database/creds/app", None)
            .await
            .expect("revoke the role's leases");
        pg.admin()
            .await
            .expect("admin connection")
            .execute(
                "SELECT pg_terminate_backend(pid) FROM unnest($1::int4[]) AS pid",
                &[&pids],
            )
            .await
            .expect("terminate the revoked user's sessions");
        let started = Instant::now();
        // A checkout may still meet a session terminated while idle (as a plain pool would);
        // what must happen within the pool's timeout is a connect with a new user.
        let now = loop {
            match A::whoami(&pool).await {
                Ok(me) if me.user != user => break me.user,
                Ok(me) => panic!(
                    "{} (round {round}): a session of the revoked user {} served",
                    A::NAME,
                    me.user
                ),
                Err(e) => assert!(
                    started.elapsed() < POOL_TIMEOUT,
                    "{} (round {round}): no checkout with a new user within {POOL_TIMEOUT:?}: {}; {:?}",
                    A::NAME,
                    error_chain(&*e),
                    rotation.stats()
                ),
            }
        };
        let took = started.elapsed();
        eprintln!(
            "{} (round {round}): lease of {user} revoked; {now} connected after {took:?}",
            A::NAME
        );
        assert!(took < POOL_TIMEOUT, "{}: {took:?}", A::NAME);
        assert_eq!(now, credentials.current().credential().username());
        user = now;
    }
}
