//! The hand-off from the connect to the `post_create` hook, under the conditions that would
//! break it if deadpool ever suspended between the two.

use std::collections::BTreeSet;
use std::time::Duration;

use credswap_core::{Credential, MemorySource, RotatingCredentials};
use credswap_testkit::harness::{manual_policy, postgres};
use credswap_testkit::{random_password, unique_name};
use deadpool_postgres::PoolConfig;
use tokio_postgres::NoTls;

use super::*;
use crate::Builder;

const ROUNDS: usize = 4;
const ROTATIONS_PER_ROUND: usize = 4;
const CONCURRENT: usize = 32;

/// On a one-worker runtime, dozens of connects complete interleaved while the credential
/// rotates to a different role at every generation: every connection's tag must name the
/// generation whose role `SELECT current_user` reports. If deadpool awaited anything between
/// `Manager::create` and the `post_create` hooks, another connect on this thread would complete
/// in between and the hook would take its tag (or none).
#[test]
fn every_connection_carries_the_tag_of_its_own_connect() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pg = postgres().await;
        // roles[g - 1] is the login of generation g.
        let mut roles = Vec::new();
        for _ in 0..=ROUNDS * ROTATIONS_PER_ROUND {
            let (role, password) = (unique_name("handoff"), random_password());
            pg.create_login_role(&role, &password)
                .await
                .expect("create role");
            roles.push(Credential::new(role, password));
        }
        let store = MemorySource::new(roles[0].clone());
        let credentials = RotatingCredentials::new(store.clone(), manual_policy())
            .await
            .expect("provider");
        let mut pool_config = PoolConfig::new(CONCURRENT);
        pool_config.timeouts.create = Some(Duration::from_secs(10));
        let (pool, rotation, tags) = Builder::new(pg.base_config(), NoTls, credentials.clone())
            .pool_config(pool_config)
            .build_tagged()
            .expect("pool");

        let mut generations = BTreeSet::new();
        let mut next = 1;
        for round in 0..ROUNDS {
            // Checkouts start a few at a time, and the credential moves on in between: connects
            // of several generations are in flight at once and complete interleaved.
            let mut checkouts = Vec::new();
            for started in 1..=CONCURRENT {
                let (pool, tags) = (pool.clone(), Arc::clone(&tags));
                checkouts.push(tokio::spawn(async move {
                    let client = pool.get().await.expect("checkout");
                    let tag = tags.get(&client).expect("every connection has a tag");
                    let row = client
                        .query_one("SELECT current_user::text", &[])
                        .await
                        .expect("current_user");
                    (tag.generation(), row.get::<_, String>(0), client)
                }));
                if started % (CONCURRENT / ROTATIONS_PER_ROUND) == 0 {
                    // Lets the new checkouts begin their connects with the current credential.
                    tokio::task::yield_now().await;
                    store.set(roles[next].clone());
                    credentials.refresh().await.expect("refresh");
                    next += 1;
                }
            }
            let mut held = Vec::new();
            for checkout in checkouts {
                let (generation, user, client) = checkout.await.expect("checkout task");
                assert_ne!(
                    generation, UNKNOWN,
                    "round {round}: a connection lost its tag in the hand-off"
                );
                let index = usize::try_from(generation.get() - 1).expect("generation");
                assert_eq!(
                    user,
                    roles[index].username(),
                    "round {round}: a connection tagged with generation {generation} logged in as another role"
                );
                generations.insert(generation);
                held.push(client);
            }
        }
        let stats = rotation.stats();
        assert_eq!(stats.untagged, 0, "{stats:?}");
        // The first round's connects span every generation it published; later rounds also
        // reuse idle connections of earlier logins (prove before drain keeps those that are not
        // stale yet), so they open fewer.
        assert!(
            generations.len() >= ROTATIONS_PER_ROUND + ROUNDS - 1,
            "connects of several generations completed interleaved: {generations:?} {stats:?}"
        );
    });
}
