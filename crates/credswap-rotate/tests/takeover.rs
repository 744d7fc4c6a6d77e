//! Whose rotation is it: a rotation does not take `AWSPENDING` over from another token's
//! version unless told to, and a token whose rotation finished is not run again (that would
//! put a retired password back). Real moto, real PostgreSQL.

mod common;

use common::{login, world};
use credswap_rotate::{Master, Outcome, Rotator, Step, Strategy, new_token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tokens_pending_version_is_taken_over_only_when_told() {
    let w = world().await;
    let (role, password, secret) = w.single_user().await;
    // A rotation function died after createSecret: its version is AWSPENDING.
    let lambda = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser);
    let other = new_token();
    lambda.create_secret(&other).await.unwrap();
    let (_, other_password) = login(&w.value(&secret, "AWSPENDING").await);

    // A whole rotation, a createSecret with a new token, and the other steps with a new token
    // are all refused; nothing changes.
    let rotator = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser);
    let err = rotator.rotate().await.unwrap_err();
    assert!(err.is_takeover_refused(), "{err:?}");
    assert_eq!(err.version_id(), Some(other.as_str()));
    let token = new_token();
    let err = rotator.create_secret(&token).await.unwrap_err();
    assert!(err.is_takeover_refused(), "{err:?}");
    assert_eq!(err.step(), Some(Step::CreateSecret));
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(text.contains(&secret) && text.contains(&other), "{text}");
        assert!(
            !text.contains(&other_password) && !text.contains(&password),
            "{text}"
        );
    }
    assert_eq!(
        w.versions_with(&secret, "AWSPENDING").await,
        vec![other.clone()]
    );
    assert!(
        !w.stages(&secret).await.contains_key(&token),
        "no version for the new token"
    );
    assert!(w.logs_in(&role, &password).await);
    // The same holds for alternating users.
    let err = Rotator::new(
        w.client.clone(),
        &secret,
        Strategy::AlternatingUsers(Master::FromSecret),
    )
    .rotate()
    .await
    .unwrap_err();
    assert!(err.is_takeover_refused(), "{err:?}");

    // Told to, it takes AWSPENDING over and finishes its own rotation.
    let report = rotator.clone().takeover(true).rotate().await.unwrap();
    assert!(report.steps.iter().all(|s| s.outcome == Outcome::Done));
    assert_eq!(
        w.versions_with(&secret, "AWSCURRENT").await,
        vec![report.token.clone()]
    );
    assert!(w.versions_with(&secret, "AWSPENDING").await.is_empty());
    let (_, new_password) = login(&w.value(&secret, "AWSCURRENT").await);
    assert!(w.logs_in(&role, &new_password).await);
    assert!(!w.logs_in(&role, &other_password).await);

    // The taken-over token cannot take AWSPENDING back from a later rotation either.
    let later = new_token();
    rotator.create_secret(&later).await.unwrap();
    let err = rotator.rotate_with_token(&other).await.unwrap_err();
    assert!(
        err.is_takeover_refused() || err.is_token_finished(),
        "{err:?}"
    );
    assert_eq!(w.versions_with(&secret, "AWSPENDING").await, vec![later]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_token_is_refused_and_the_password_stays() {
    let w = world().await;
    let (role, _, secret) = w.single_user().await;
    let rotator = Rotator::new(w.client.clone(), &secret, Strategy::SingleUser);
    let first = rotator.rotate().await.unwrap().token;
    let (_, first_password) = login(&w.value(&secret, "AWSCURRENT").await);

    // The token of the current version: a whole rotation with it is refused (a single step
    // re-run stays a no-op, as the protocol wants).
    let err = rotator.rotate_with_token(&first).await.unwrap_err();
    assert!(err.is_token_finished() && err.is_version(), "{err:?}");
    assert!(!err.is_takeover_refused());
    assert_eq!(err.version_id(), Some(first.as_str()));
    assert!(err.to_string().contains("AWSCURRENT"), "{err}");
    assert_eq!(
        rotator.finish_secret(&first).await.unwrap().outcome,
        Outcome::AlreadyDone
    );

    // After the next rotation the first token's version is AWSPREVIOUS: every step and a
    // whole rotation with it are refused, and the database keeps the newest password.
    let second = rotator.rotate().await.unwrap().token;
    let (_, second_password) = login(&w.value(&secret, "AWSCURRENT").await);
    assert_eq!(
        w.versions_with(&secret, "AWSPREVIOUS").await,
        vec![first.clone()]
    );
    let err = rotator.rotate_with_token(&first).await.unwrap_err();
    assert!(err.is_token_finished(), "{err:?}");
    assert_eq!(err.step(), Some(Step::CreateSecret));
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("AWSPREVIOUS") && text.contains(&secret),
        "{text}"
    );
    assert!(text.contains("retired password"), "{text}");
    assert!(
        !text.contains(&first_password) && !text.contains(&second_password),
        "{text}"
    );
    for step in Step::ALL {
        let err = rotator.run_step(step, &first).await.unwrap_err();
        assert!(err.is_token_finished(), "{step}: {err:?}");
        assert_eq!(err.step(), Some(step));
    }
    assert!(w.versions_with(&secret, "AWSPENDING").await.is_empty());
    assert_eq!(w.versions_with(&secret, "AWSCURRENT").await, vec![second]);
    assert!(w.logs_in(&role, &second_password).await);
    assert!(!w.logs_in(&role, &first_password).await);
}
