//! The pending credential: a store's rotation with its new value readable before it is current
//! (Secrets Manager's `AWSPENDING`) is followed before the store finishes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use credswap_core::Credential;
use tokio::time::Instant;

use super::super::{Adapter, Route};
use super::helpers::*;
use super::scenarios::*;
use crate::harness::{error_chain, manual_policy, single_role};
use crate::random_password;

/// A single-user rotation the way Secrets Manager runs it: the new password is stored as
/// *pending* (createSecret), the database takes it (setSecret), and the store makes it current
/// only 3 s later (finishSecret). A checkout in that window, through the plain pool API, opens
/// with the pending credential, and the provider publishes it without waiting for the store;
/// the store's catching up later is not a rotation.
pub async fn the_pending_credential_bridges_a_single_user_rotation<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    // Busy, so that the next checkouts must connect.
    let mut first = checkout::<A>(&pool).await;
    let first_pid = who(&mut first).await.pid;

    let password = random_password();
    store.set_pending(Some(Credential::new(role.clone(), password.clone())));
    pg.set_password(&role, &password).await.expect("ALTER ROLE");
    let finish = Duration::from_secs(3);
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut session = match A::checkout(&pool).await {
            Ok(session) => session,
            Err(e) => panic!(
                "{}: a checkout between setSecret and finishSecret must use the pending \
                 credential: {}\n{:?}",
                A::NAME,
                error_chain(&*e),
                rotation.stats()
            ),
        };
        assert_eq!(who(&mut session).await.user, role);
        held.push(session);
    }
    let waited = started.elapsed();
    assert!(
        waited < finish - Duration::from_secs(1),
        "{}: the checkouts waited {waited:?}, as if for the store",
        A::NAME
    );
    assert_eq!(
        credentials.generation().get(),
        2,
        "the pending credential is published once the database accepted it"
    );
    assert!(credentials.current().is_proven());
    assert!(!credentials.health().is_refused());
    let stats = rotation.stats();
    assert!(stats.pending_connects >= 1, "{stats:?}");
    assert_eq!(credentials.stats().pending_published, 1);
    assert_no_secret(
        &[&password],
        &[
            ("the Rotation", format!("{rotation:?}")),
            ("the provider", format!("{credentials:?}")),
        ],
    );

    // Until finishSecret the store still says the old password: a refresh is not a change back.
    credentials.refresh().await.expect("refresh");
    assert_eq!(credentials.generation().get(), 2);
    assert_eq!(who(&mut held[0]).await.user, role);

    // finishSecret: the store's current is the pending credential now; not a new generation.
    tokio::time::sleep(finish.saturating_sub(started.elapsed())).await;
    store.set(Credential::new(role.clone(), password));
    store.set_pending(None);
    credentials.refresh().await.expect("refresh");
    assert_eq!(credentials.generation().get(), 2);

    // The session of the old password is drained once returned.
    execute(&mut first, "SELECT 1").await;
    drop(first);
    drop(held);
    if pg.pooler().is_some() {
        assert_client_side_drained(&rotation, A::NAME).await;
    } else {
        wait_closed(
            &pg,
            &role,
            Some(first_pid),
            Duration::from_secs(2),
            "the connection of the old password is closed after its return",
        )
        .await;
    }
    eprintln!(
        "{}: three checkouts in the setSecret..finishSecret window took {waited:?}; {:?}",
        A::NAME,
        rotation.stats()
    );
}

/// How long a store's rotation may leave its pending credential unproven once the database has
/// it: pending trials come at most [`PENDING_TRIAL_MAX`](credswap_core::contract::proof::PENDING_TRIAL_MAX)
/// apart, and a trial is a connect.
const PENDING_PROVEN_WITHIN: Duration = Duration::from_secs(4);

/// How long each store answer takes in the slow-store round.
const SLOW_STORE: Duration = Duration::from_secs(6);

/// A store that rotates single-user with its pending credential readable (Secrets Manager's
/// `AWSPENDING`), seen by a pool that never has to connect (full and healthy): the pool tries
/// the pending login now and then (a pending trial), moves to it within
/// `PENDING_PROVEN_WITHIN` of the database having it, and drains the old sessions before the
/// store finishes, idle and under load, without failing a request or passing its size. Then
/// once more under load with the store answering only after 6 s from setSecret on (a fleet's
/// refusals at once slow it down): a refused connect tries the pending login the provider
/// holds without waiting for the store's answer.
pub async fn a_full_pool_moves_to_the_pending_credential_before_the_store_finishes<
    A: Adapter,
    R: Route,
>() {
    let pg = R::postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loaded = None;
    for round in ["idle", "under load", "under load, the store slow"] {
        let old: Vec<i32> = hold::<A>(&pool, 4)
            .await
            .into_iter()
            .map(|(_, me)| me.pid)
            .collect();
        if round == "under load" {
            loaded = Some(load::<A>(&pool, 8, &stop));
        }
        let generation = credentials.generation();

        // createSecret: the store has a pending credential; the refresher sees the rotation.
        let password = random_password();
        store.set_pending(Some(Credential::new(role.clone(), password.clone())));
        credentials.refresh().await.expect("refresh");
        assert!(
            credswap_core::contract::Feedback::new(&credentials)
                .pending()
                .is_some(),
            "the provider reads the pending credential while the store rotates"
        );
        // Before setSecret the database refuses it: the trials fail quietly, nothing moves.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(credentials.generation(), generation, "{round}");
        assert!(!credentials.health().is_refused(), "{round}");
        if round.ends_with("the store slow") {
            store.set_delay(SLOW_STORE);
        }

        // setSecret: the database has the new password; the store has not finished.
        pg.set_password(&role, &password).await.expect("ALTER ROLE");
        let mut limit = PENDING_PROVEN_WITHIN;
        if round.ends_with("the store slow") {
            // The pool's refused connects try the pending login they hold at once: no checkout
            // waits for the store. (Publishing it waits for the fetch under way.)
            let (slowest, failed) = slowest_checkout::<A>(&pool, 4, Duration::from_secs(3)).await;
            assert_eq!(failed, 0, "{}: checkouts failed", A::NAME);
            assert!(
                slowest < Duration::from_millis(1500),
                "{}: a checkout waited {slowest:?}, for the slow store",
                A::NAME
            );
            limit += SLOW_STORE;
        }
        let took = wait_for(
            "the pool proves the pending credential before the store finishes",
            limit,
            || credentials.generation() > generation,
        )
        .await;
        assert!(credentials.current().is_proven());
        if pg.pooler().is_some() {
            assert_client_side_drained(&rotation, A::NAME).await;
        } else {
            for pid in &old {
                wait_closed(
                    &pg,
                    &role,
                    Some(*pid),
                    Duration::from_secs(2),
                    "a session of the old password drains before the store finishes",
                )
                .await;
            }
        }
        eprintln!(
            "{} ({round}): the pending credential was published {took:?} after setSecret; {:?}",
            A::NAME,
            rotation.stats()
        );

        // finishSecret: not a change.
        store.set_delay(Duration::ZERO);
        let published = credentials.generation();
        store.set(Credential::new(role.clone(), password));
        store.set_pending(None);
        credentials.refresh().await.expect("refresh");
        assert_eq!(credentials.generation(), published);
        assert!(
            credswap_core::contract::Feedback::new(&credentials)
                .pending()
                .is_none()
        );
        assert_eq!(whoami::<A>(&pool).await.user, role);
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, first) = loaded.expect("load").await.expect("load");
    let stats = rotation.stats();
    assert_eq!(
        failed,
        0,
        "{}: {failed} of {} requests failed, first: {first:?}; {stats:?}",
        A::NAME,
        ok + failed
    );
    assert!(ok > 100, "{}: only {ok} requests ran", A::NAME);
    assert_eq!(credentials.stats().pending_published, 3, "{stats:?}");
    assert!(
        stats.live() <= 4,
        "{}: the pool counted {} connections",
        A::NAME,
        stats.live()
    );
}
