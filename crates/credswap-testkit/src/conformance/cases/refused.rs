//! Refused logins: a checkout waits for the new credential, a wrong one fails clearly, and a
//! mistyped or unvalidated secret never takes down a working pool.

use std::time::Duration;

use credswap_core::{Credential, Generation, MemorySource, RotatingCredentials};
use tokio::time::Instant;

use super::super::{Adapter, Route};
use super::capture;
use super::helpers::*;
use super::scenarios::*;
use crate::harness::{app_policy, error_chain, manual_policy, session_pids, single_role};
use crate::scenario::Strategy;
use crate::{random_password, unique_name};

/// Single user, zero overlap: the database's password changes and the store learns the new one
/// 300 ms later. A checkout in between, through the plain pool API, waits for it and succeeds.
pub async fn auth_failure_at_connect_waits_for_the_new_credential<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    // Busy, so that the next checkout must connect.
    let mut first = checkout::<A>(&pool).await;
    let first_pid = who(&mut first).await.pid;

    let password = random_password();
    pg.set_password(&role, &password).await.expect("ALTER ROLE");
    let fetches_before = store.fetch_count();
    let lag = Duration::from_millis(300);
    let lagging_store = tokio::spawn({
        let (store, role) = (store.clone(), role.clone());
        async move {
            tokio::time::sleep(lag).await;
            store.set(Credential::new(role, password));
        }
    });
    let started = Instant::now();
    let mut second = match A::checkout(&pool).await {
        Ok(session) => session,
        Err(e) => panic!(
            "{}: the checkout must wait for the new credential: {}\n{:?}",
            A::NAME,
            error_chain(&*e),
            rotation.stats()
        ),
    };
    let waited = started.elapsed();
    lagging_store.await.expect("store task");
    let me = who(&mut second).await;
    assert_eq!(me.user, role);
    assert_ne!(me.pid, first_pid);
    assert!(
        waited >= lag - Duration::from_millis(50) && waited < Duration::from_secs(3),
        "the checkout connected once the store had the new password: {waited:?}"
    );
    assert_eq!(credentials.generation().get(), 2);
    let stats = rotation.stats();
    assert!(
        stats.auth_failures >= 1 && stats.auth_retries >= 1,
        "{stats:?}"
    );
    assert_eq!(stats.connect_failures, 0, "{stats:?}");
    assert!(!credentials.health().is_refused());
    let fetches = store.fetch_count() - fetches_before;
    assert!(
        fetches <= 6,
        "{fetches} store fetches in {waited:?}: refused logins ask the store at most once per auth_refresh_interval"
    );

    // The session opened before the change lives on, and is closed once returned.
    execute(&mut first, "SELECT 1").await;
    drop((first, second));
    wait_closed(
        &pg,
        &role,
        Some(first_pid),
        Duration::from_secs(1),
        "the connection of the old password is closed after its return",
    )
    .await;
    eprintln!(
        "{}: a checkout during a 300 ms store lag waited {waited:?}; {stats:?}",
        A::NAME
    );
}

/// The store holds a wrong password: a checkout fails within the pool's timeout with an error
/// that names the role or SQLSTATE `28P01` (or, where the pool reports only its timeout, a log
/// line that does) and never the password; once the store holds the right one, the pool
/// recovers.
pub async fn persistent_wrong_password_fails_clearly_without_the_secret<A: Adapter, R: Route>() {
    let logs = capture::start();
    let pg = R::postgres().await;
    let role = unique_name("app");
    let good = login_role(&pg, &role).await;
    let wrong = format!("wrong-{}", random_password());
    let store = MemorySource::new(Credential::new(role.clone(), wrong.clone()));
    let credentials = RotatingCredentials::new(store.clone(), manual_policy())
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 2).await;

    let started = Instant::now();
    let err = match A::checkout(&pool).await {
        Ok(_) => panic!("{}: a wrong password logged in", A::NAME),
        Err(e) => e,
    };
    let waited = started.elapsed();
    let (display, debug) = (error_chain(&*err), format!("{err:?}"));
    eprintln!("{}: failed after {waited:?}: {display}", A::NAME);
    assert!(
        waited < Duration::from_secs(12),
        "the checkout fails within the pool's timeout: {waited:?}"
    );
    // Where the pool reports only its own timeout (bb8's `Pool::get` returns nothing else), the
    // adapter's log must name them instead, long before that timeout.
    // PgBouncer refuses a login with its own `08P01` ("SASL authentication failed").
    let code = if pg.pooler().is_some() {
        "08P01"
    } else {
        "28P01"
    };
    let logged = logs.text();
    assert!(
        display.contains(code)
            || display.contains(&role)
            || (logged.contains(code) && logged.contains(&role)),
        "the error, or the adapter's log where the pool reports only a timeout, names SQLSTATE \
         {code} and the role {role}: {display}"
    );
    let stats = rotation.stats();
    assert!(stats.auth_failures >= 1, "{stats:?}");
    assert!(stats.connect_failures >= 1, "{stats:?}");
    let health = credentials.health();
    assert!(health.is_refused(), "{health:?}");
    let fetches = store.fetch_count();
    let bound = 2 + (waited.as_millis() / 200) as u64 + 3;
    assert!(
        fetches <= bound,
        "{fetches} store fetches in {waited:?}: at most one per auth_refresh_interval"
    );
    assert_no_secret(
        &[&wrong],
        &[
            ("the error", display),
            ("the error's Debug", debug),
            ("the Rotation", format!("{rotation:?}")),
            ("the stats", format!("{stats:?}")),
            ("the provider", format!("{credentials:?}")),
            ("the health", format!("{health:?}")),
            ("the logs", logs.text()),
        ],
    );

    // The store is fixed: the next refused login fetches it, and the pool recovers.
    store.set(Credential::new(role.clone(), good.clone()));
    let started = Instant::now();
    assert_eq!(whoami::<A>(&pool).await.user, role);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!credentials.health().is_refused());
    assert_no_secret(&[&wrong, &good], &[("the logs", logs.text())]);
}

/// With the adapter's validator, a wrong password published by the store is never swapped in:
/// the pool keeps working on the old credential, new connections included.
pub async fn validate_before_swap_keeps_the_working_credential<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let role = unique_name("app");
    let good = login_role(&pg, &role).await;
    let store = MemorySource::new(Credential::new(role.clone(), good.clone()));
    let credentials = RotatingCredentials::builder(store.clone())
        .policy(app_policy(Strategy::SingleUser))
        .validator(A::validator(&pg))
        .build()
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    assert_eq!(whoami::<A>(&pool).await.user, role);

    let wrong = format!("wrong-{}", random_password());
    store.set(Credential::new(role.clone(), wrong.clone()));
    let err = credentials
        .refresh()
        .await
        .expect_err("the validator refuses a password the database does not have");
    assert!(err.is_validation(), "{err}");
    assert_no_secret(
        &[&wrong],
        &[("the validation error", format!("{err} {err:?}"))],
    );

    // Refreshes keep being refused; connections, new ones included, use the old credential.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(credentials.generation().get(), 1);
    let held = hold::<A>(&pool, 4).await;
    assert!(held.iter().all(|(_, me)| me.user == role));
    drop(held);
    assert!(
        credentials.stats().rejected >= 2,
        "refreshes retried on the backoff schedule: {:?}",
        credentials.stats()
    );
    let stats = rotation.stats();
    assert_eq!(stats.auth_failures, 0, "{stats:?}");
    assert_eq!(stats.stale_closed, 0, "nothing was drained: {stats:?}");

    // The right password again: the same login as generation 1, so no new generation.
    store.set(Credential::new(role.clone(), good));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(credentials.generation().get(), 1);
    assert!(
        credentials.health().is_healthy(),
        "{:?}",
        credentials.health()
    );
}

/// A mistyped secret, no validator: the store publishes a password the database does not have.
/// Prove before drain: the sessions of the working login are not drained, every checkout keeps
/// succeeding (a connection the pool opens falls back to the last accepted login), and the
/// provider's health says the database refuses the credential. A flip back to the working
/// password (A→B→A) needs no drain at all; a real rotation afterwards drains the old sessions
/// as soon as the new login has been accepted.
pub async fn a_mistyped_secret_keeps_the_pool_serving<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let role = unique_name("app");
    let good = login_role(&pg, &role).await;
    let store = MemorySource::new(Credential::new(role.clone(), good.clone()));
    let credentials = RotatingCredentials::new(store.clone(), app_policy(Strategy::SingleUser))
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    let first = hold::<A>(&pool, 4).await;
    let first_pids: Vec<i32> = first.iter().map(|(_, me)| me.pid).collect();
    drop(first);

    let wrong = format!("wrong-{}", random_password());
    store.set(Credential::new(role.clone(), wrong.clone()));
    credentials.refresh().await.expect("refresh");
    assert_eq!(credentials.generation().get(), 2);

    // Two seconds of traffic, up to the pool's size at once: not one checkout fails.
    let started = Instant::now();
    let mut checkouts = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let held = hold::<A>(&pool, 4).await;
        assert!(held.iter().all(|(_, me)| me.user == role));
        checkouts += held.len();
        drop(held);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(
        "the provider's health says the database refuses the new credential",
        Duration::from_secs(3),
        || credentials.health().is_refused(),
    )
    .await;
    let open = session_pids(&pg, &role).await;
    assert!(
        first_pids.iter().any(|pid| open.contains(pid)),
        "{}: the working sessions were drained for a credential never accepted; open {open:?}, \
         first {first_pids:?}",
        A::NAME
    );
    let health = credentials.health();
    assert_eq!(health.generation(), Generation::new(2));
    assert_no_secret(
        &[&wrong],
        &[
            ("the health", format!("{health:?}")),
            ("the Rotation", format!("{rotation:?}")),
        ],
    );
    eprintln!(
        "{}: {checkouts} checkouts served during the mistake; {:?}",
        A::NAME,
        rotation.stats()
    );

    // The store is fixed by flipping back: the same login as generation 1, nothing to drain.
    store.set(Credential::new(role.clone(), good.clone()));
    credentials.refresh().await.expect("refresh");
    let current = credentials.current();
    assert_eq!(current.generation().get(), 3);
    assert!(
        current.is_proven(),
        "the login of generation 1 was accepted before"
    );
    assert!(!credentials.health().is_refused());
    assert_eq!(whoami::<A>(&pool).await.user, role);

    // A real rotation now: the old sessions go once the new login has been accepted (behind a
    // pooler, the pool's own connections; the server sessions are the pooler's).
    let survivors: Vec<i32> = session_pids(&pg, &role).await;
    rotate_single(&pg, &role, &store, &credentials).await;
    assert_eq!(whoami::<A>(&pool).await.user, role);
    if pg.pooler().is_some() {
        assert_client_side_drained(&rotation, A::NAME).await;
        return;
    }
    for pid in survivors {
        wait_closed(
            &pg,
            &role,
            Some(pid),
            Duration::from_secs(2),
            "a session of the old login is drained once the new one is accepted",
        )
        .await;
    }
}

/// A single-user rotation that went on while the store could not be read: the provider learns
/// a password the database has already replaced (the next rotation's setSecret came first),
/// and the store then throttles every read. Neither the new login nor the last proven one
/// works, but the pool's sessions do: a plain pool would keep serving on them, and so must
/// this one. A canary (a working session let go to try the new login) cannot be replaced
/// here, so the pool lets go of at most one and probes in its free place after that; with
/// three of its four places busy, not one checkout fails. Once the store answers again, the
/// provider reads the newest password by itself and the old sessions drain.
pub async fn a_password_replaced_before_the_store_is_read_keeps_the_pool_serving<
    A: Adapter,
    R: Route,
>() {
    let pg = R::postgres().await;
    let role = unique_name("app");
    let first = login_role(&pg, &role).await;
    let store = MemorySource::new(Credential::new(role.clone(), first));
    let credentials = RotatingCredentials::new(store.clone(), app_policy(Strategy::SingleUser))
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    let held = hold::<A>(&pool, 4).await;
    let first_pids: Vec<i32> = held.iter().map(|(_, me)| me.pid).collect();
    drop(held);

    // The database is two rotations on; the store shows the first of them, then throttles.
    let newest = random_password();
    pg.set_password(&role, &newest).await.expect("ALTER ROLE");
    let replaced = random_password();
    store.set(Credential::new(role.clone(), replaced.clone()));
    credentials.refresh().await.expect("refresh");
    assert_eq!(credentials.generation().get(), 2);
    store.throttle(1.0);

    // Three seconds of traffic, three checkouts at once: not one fails.
    let started = Instant::now();
    let mut checkouts = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let held = hold::<A>(&pool, 3).await;
        assert!(held.iter().all(|(_, me)| me.user == role));
        checkouts += held.len();
        drop(held);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = rotation.stats();
    eprintln!(
        "{}: {checkouts} checkouts served with no known login working; {stats:?}",
        A::NAME
    );
    assert!(
        stats.canaries <= 1,
        "{}: {} working connections let go as canaries, when none could be replaced",
        A::NAME,
        stats.canaries
    );
    if pg.pooler().is_none() {
        let open = session_pids(&pg, &role).await;
        let kept = first_pids.iter().filter(|pid| open.contains(pid)).count();
        assert!(
            kept >= 3,
            "{}: {kept} of the 4 working sessions kept; open {open:?}, first {first_pids:?}",
            A::NAME
        );
    }
    assert_no_secret(
        &[&replaced, &newest],
        &[("the Rotation", format!("{rotation:?}"))],
    );

    // The store answers again, with the database's password: the provider finds it by itself.
    store.set(Credential::new(role.clone(), newest));
    store.throttle(0.0);
    wait_for(
        "the provider reads the database's password from the store by itself",
        Duration::from_secs(5),
        || credentials.generation().get() == 3,
    )
    .await;
    assert_eq!(whoami::<A>(&pool).await.user, role);
    if pg.pooler().is_some() {
        assert_client_side_drained(&rotation, A::NAME).await;
        return;
    }
    for pid in first_pids {
        wait_closed(
            &pg,
            &role,
            Some(pid),
            Duration::from_secs(3),
            "a session of the replaced login is drained once the newest is accepted",
        )
        .await;
    }
}
