//! The server's configuration turns the pool away: no credential can help, so nothing waits
//! for one.

use std::time::Duration;

use credswap_core::{Credential, MemorySource, RotatingCredentials};
use tokio::time::Instant;

use super::cases::build;
use super::{Adapter, Route};
use crate::harness::{error_chain, manual_policy};
use crate::{TestPostgres, random_password, unique_name};

/// The server takes this login only over TLS and the pool connects without it (a server with
/// `hostnossl ... reject`, RDS's `rds.force_ssl`): PostgreSQL answers `28000` naming
/// `pg_hba.conf`. The connector takes that for a configuration error: it fails at once, does
/// not report a refused credential, and does not send the store a fetch per attempt. (A pool
/// that retries failed connects by itself, as bb8 does until its `connection_timeout`, still
/// reports only its own timeout; the attempts are counted as failed connects, not as refused
/// logins.)
pub async fn a_pg_hba_rejection_fails_fast_as_a_configuration_error<A: Adapter, R: Route>() {
    let pg = match TestPostgres::start_tls().await {
        Ok(pg) => pg,
        Err(e) => panic!("starting the TLS cluster failed: {e}"),
    };
    let role = unique_name("hba");
    let password = random_password();
    pg.create_login_role(&role, &password)
        .await
        .expect("create role");
    let store = MemorySource::new(Credential::new(role.clone(), password.clone()));
    let credentials = RotatingCredentials::new(store.clone(), manual_policy())
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 2).await;
    let fetches = store.fetch_count();
    let started = Instant::now();
    let error = match A::checkout(&pool).await {
        Ok(_) => panic!(
            "{}: a plaintext login was accepted by a server that requires TLS",
            A::NAME
        ),
        Err(e) => error_chain(&*e),
    };
    let took = started.elapsed();
    let stats = rotation.stats();
    eprintln!("{}: failed after {took:?}: {error}; {stats:?}", A::NAME);
    assert!(
        !error.contains(&password),
        "the error printed the password: {}",
        error.replace(&password, "<the password>")
    );
    assert!(
        took < Duration::from_secs(12),
        "{}: the checkout took {took:?}",
        A::NAME
    );
    assert_eq!(
        stats.auth_failures,
        0,
        "{}: a pg_hba rejection was taken for a refused password: {stats:?}",
        A::NAME
    );
    assert_eq!(
        store.fetch_count(),
        fetches,
        "{}: the store was asked for another credential",
        A::NAME
    );
    assert!(!credentials.health().is_refused());
    // Not waited out as a refused login: one attempt per pool connect, none retried by the
    // connector itself.
    assert_eq!(stats.auth_retries, 0, "{stats:?}");
    if took < Duration::from_secs(3) {
        assert!(
            error.contains("pg_hba.conf") || error.contains("28000"),
            "{}: the error names the server's rule: {error}",
            A::NAME
        );
    }
}
