//! Single-user rotation against a real moto and a real PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{login, world};
use credswap_rotate::{Outcome, Rotator, Step, Strategy, new_token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_changes_the_password_and_moves_the_stages() {
    let w = world().await;
    let (role, old_password, secret) = w.single_user().await;
    let old_version = w.versions_with(&secret, "AWSCURRENT").await;

    let started = Instant::now();
    let report = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser)
        .pause_before_finish(Duration::from_millis(300))
        .rotate()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(report.username, role);
    assert_eq!(report.previous_username, role);
    assert!(!report.created_role);
    assert_eq!(
        report
            .steps
            .iter()
            .map(|s| (s.step, s.outcome))
            .collect::<Vec<_>>(),
        Step::ALL.map(|s| (s, Outcome::Done)).to_vec()
    );

    // The database: only the new password logs in.
    let current = w.value(&secret, "AWSCURRENT").await;
    let (user, new_password) = login(&current);
    assert_eq!(user, role);
    assert_ne!(new_password, old_password);
    assert_eq!(new_password.len(), credswap_rotate::DEFAULT_LENGTH);
    assert!(w.logs_in(&role, &new_password).await);
    assert!(!w.logs_in(&role, &old_password).await);

    // The store: AWSCURRENT on the token, AWSPREVIOUS on the old version, no AWSPENDING.
    assert_eq!(
        w.versions_with(&secret, "AWSCURRENT").await,
        vec![report.token.clone()]
    );
    assert_eq!(w.versions_with(&secret, "AWSPREVIOUS").await, old_version);
    assert!(w.versions_with(&secret, "AWSPENDING").await.is_empty());
    assert_eq!(
        login(&w.value(&secret, "AWSPREVIOUS").await).1,
        old_password
    );

    // Every other field of the secret is kept.
    for field in ["engine", "host", "port", "dbname", "note"] {
        assert_eq!(current[field], w.secret_json(&role, "x")[field], "{field}");
    }

    // And again: the next rotation works from the new password.
    let again = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser)
        .rotate()
        .await
        .unwrap();
    let (_, newest) = login(&w.value(&secret, "AWSCURRENT").await);
    assert!(w.logs_in(&role, &newest).await);
    assert!(!w.logs_in(&role, &new_password).await);
    assert_eq!(
        w.versions_with(&secret, "AWSPREVIOUS").await,
        vec![report.token]
    );
    assert_eq!(
        w.versions_with(&secret, "AWSCURRENT").await,
        vec![again.token]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_rerun_with_the_same_token_is_safe() {
    let w = world().await;
    let (role, old_password, secret) = w.single_user().await;
    let rotator = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser);
    let token = new_token();

    // setSecret before createSecret: the token is not pending.
    let err = rotator.set_secret(&token).await.unwrap_err();
    assert!(err.is_version(), "{err:?}");
    assert_eq!(err.step(), Some(Step::SetSecret));

    let first = rotator.create_secret(&token).await.unwrap();
    assert_eq!(first.outcome, Outcome::Done);
    let pending = w.value(&secret, "AWSPENDING").await;
    let again = rotator.create_secret(&token).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyDone);
    assert_eq!(
        w.value(&secret, "AWSPENDING").await,
        pending,
        "createSecret again keeps the value"
    );
    let (_, new_password) = login(&pending);

    assert_eq!(
        rotator.set_secret(&token).await.unwrap().outcome,
        Outcome::Done
    );
    assert!(w.logs_in(&role, &new_password).await);
    assert!(!w.logs_in(&role, &old_password).await);
    // The current credential no longer logs in: the re-run sees the pending one does.
    assert_eq!(
        rotator.set_secret(&token).await.unwrap().outcome,
        Outcome::AlreadyDone
    );

    assert_eq!(
        rotator.test_secret(&token).await.unwrap().outcome,
        Outcome::Done
    );
    assert_eq!(
        rotator.test_secret(&token).await.unwrap().outcome,
        Outcome::Done
    );

    assert_eq!(
        rotator.finish_secret(&token).await.unwrap().outcome,
        Outcome::Done
    );
    assert_eq!(
        rotator.finish_secret(&token).await.unwrap().outcome,
        Outcome::AlreadyDone
    );

    // Once finished, every step is a no-op for that token.
    for step in Step::ALL {
        let report = rotator.run_step(step, &token).await.unwrap();
        assert_eq!(report.outcome, Outcome::AlreadyDone, "{step}");
    }
    assert_eq!(w.versions_with(&secret, "AWSCURRENT").await, vec![token]);
    assert!(w.versions_with(&secret, "AWSPENDING").await.is_empty());
    assert_eq!(login(&w.value(&secret, "AWSCURRENT").await).1, new_password);
    assert!(w.logs_in(&role, &new_password).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_interrupted_after_set_secret_is_not_taken_over_and_resumes_with_its_token() {
    let w = world().await;
    let (role, _, secret) = w.single_user().await;
    let rotator = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser);
    let abandoned = new_token();
    rotator.create_secret(&abandoned).await.unwrap();
    rotator.set_secret(&abandoned).await.unwrap();
    let (_, set_password) = login(&w.value(&secret, "AWSPENDING").await);
    assert!(w.logs_in(&role, &set_password).await);

    // AWSCURRENT no longer logs in; only the abandoned version holds the database's password.
    // A new rotation must not take AWSPENDING from it: it would orphan that password.
    let err = rotator.rotate().await.unwrap_err();
    assert!(err.is_takeover_refused() && err.is_version(), "{err:?}");
    assert!(!err.is_auth_failure(), "{err:?}");
    assert_eq!(err.step(), Some(Step::CreateSecret));
    assert_eq!(err.version_id(), Some(abandoned.as_str()));
    let text = format!("{err} {err:?}");
    assert!(
        text.contains(&secret) && text.contains(&abandoned),
        "{text}"
    );
    assert!(!text.contains(&set_password), "{text}");
    // Nothing changed: AWSPENDING is still on the abandoned version, with its value.
    assert_eq!(
        w.versions_with(&secret, "AWSPENDING").await,
        vec![abandoned.clone()]
    );
    assert_eq!(login(&w.value(&secret, "AWSPENDING").await).1, set_password);
    assert!(w.logs_in(&role, &set_password).await);

    // Resuming the abandoned token finishes it.
    let report = rotator.rotate_with_token(&abandoned).await.unwrap();
    assert_eq!(report.steps[1].outcome, Outcome::AlreadyDone);
    assert_eq!(login(&w.value(&secret, "AWSCURRENT").await).1, set_password);
}
