//! Alternating-users rotation against a real moto and a real PostgreSQL.

mod common;

use std::time::Duration;

use common::{World, login, world};
use credswap_rotate::{Master, Outcome, Rotator, SessionPolicy, Step, Strategy, new_token};
use credswap_testkit::{random_password, unique_name};
use serde_json::json;

/// A user `<app>` that reads a table through a group role, owns a table of its own, has a
/// direct grant on a third and a `search_path`; a master secret (the admin login) and the
/// user's secret pointing at it through `masterarn`. Returns (user, password, secret).
async fn app_with_master(w: &World) -> (String, String, String) {
    let app = unique_name("app");
    let password = random_password();
    w.pg.create_login_role(&app, &password).await.unwrap();
    let admin = w.pg.admin().await.unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {app}_readers NOLOGIN;
             GRANT {app}_readers TO {app};
             CREATE SCHEMA {app}_data;
             GRANT USAGE ON SCHEMA {app}_data TO {app}_readers;
             CREATE TABLE {app}_data.shared (v text);
             INSERT INTO {app}_data.shared VALUES ('through the group');
             GRANT SELECT ON {app}_data.shared TO {app}_readers;
             CREATE TABLE {app}_data.direct (v text);
             INSERT INTO {app}_data.direct VALUES ('granted directly');
             GRANT USAGE ON SCHEMA {app}_data TO {app};
             GRANT SELECT ON {app}_data.direct TO {app};
             GRANT CREATE ON SCHEMA {app}_data TO {app};
             ALTER ROLE {app} SET search_path = {app}_data, public;"
        ))
        .await
        .unwrap();
    // A table the user owns.
    let owner = w.session(&app, &password).await;
    owner
        .batch_execute(&format!(
            "CREATE TABLE {app}_data.owned (v text); INSERT INTO {app}_data.owned VALUES ('owned');"
        ))
        .await
        .unwrap();
    drop(owner);

    let admin_config = w.pg.admin_config();
    let master = json!({
        "username": admin_config.get_user().unwrap(),
        "password": String::from_utf8(admin_config.get_password().unwrap().to_vec()).unwrap(),
    });
    let master_arn = w
        .create_secret(&format!("rotate/{app}/master"), &master.to_string())
        .await;
    let mut value = w.secret_json(&app, &password);
    value["masterarn"] = json!(master_arn);
    let secret = format!("rotate/{app}");
    w.create_secret(&secret, &value.to_string()).await;
    (app, password, secret)
}

fn rotator(w: &World, secret: &str) -> Rotator {
    Rotator::new(
        w.client.clone(),
        secret,
        Strategy::AlternatingUsers(Master::FromSecret),
    )
}

/// Reads the three tables (unqualified: through the copied search_path) as `user`.
async fn reads_everything(w: &World, user: &str, password: &str) -> Vec<String> {
    let client = w.session(user, password).await;
    let mut seen = Vec::new();
    for table in ["shared", "direct", "owned"] {
        let row = client
            .query_one(&format!("SELECT v FROM {table}"), &[])
            .await
            .unwrap_or_else(|e| panic!("{user} reads {table}: {e}"));
        seen.push(row.get(0));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_rotation_clones_the_user_and_the_second_flips_back() {
    let w = world().await;
    let (app, app_password, secret) = app_with_master(&w).await;
    let clone = format!("{app}_clone");
    // (sessions of a test's own clients may take a moment to leave: Wait, not Fail)
    let expected = reads_everything(&w, &app, &app_password).await;

    // First rotation: the clone is created with the original's privileges.
    let first = rotator(&w, &secret)
        .session_policy(SessionPolicy::Wait(Duration::from_secs(5)))
        .rotate()
        .await
        .unwrap();
    assert!(first.created_role);
    assert_eq!(first.previous_username, app);
    assert_eq!(first.username, clone);
    assert_eq!(first.sessions.as_ref().unwrap().found, 0);
    let current = w.value(&secret, "AWSCURRENT").await;
    let (user, clone_password) = login(&current);
    assert_eq!(user, clone);
    assert_eq!(
        current["masterarn"],
        w.value(&secret, "AWSPREVIOUS").await["masterarn"]
    );
    assert_eq!(current["note"], "kept as is");
    assert_eq!(
        reads_everything(&w, &clone, &clone_password).await,
        expected
    );
    // The original is untouched and still logs in (it is AWSPREVIOUS now).
    assert!(w.logs_in(&app, &app_password).await);
    assert_eq!(
        login(&w.value(&secret, "AWSPREVIOUS").await),
        (app.clone(), app_password.clone())
    );
    let admin = w.pg.admin().await.unwrap();
    let member: bool = admin
        .query_one("SELECT pg_has_role($1, $2, 'MEMBER')", &[&clone, &app])
        .await
        .unwrap()
        .get(0);
    assert!(member, "the clone is a member of the original");
    let direct: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
             JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1 AND g.rolname = $2",
            &[&clone, &format!("{app}_readers")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(direct, 1, "the clone has the original's memberships");

    // Second rotation: the original gets a new password; the clone keeps working.
    let second = rotator(&w, &secret)
        .session_policy(SessionPolicy::Wait(Duration::from_secs(5)))
        .rotate()
        .await
        .unwrap();
    assert!(!second.created_role);
    assert_eq!(second.username, app);
    let (user, new_app_password) = login(&w.value(&secret, "AWSCURRENT").await);
    assert_eq!(user, app);
    assert_ne!(new_app_password, app_password);
    assert!(w.logs_in(&app, &new_app_password).await);
    assert!(!w.logs_in(&app, &app_password).await);
    assert!(w.logs_in(&clone, &clone_password).await);
    assert_eq!(
        w.versions_with(&secret, "AWSCURRENT").await,
        vec![second.token]
    );
    assert_eq!(
        w.versions_with(&secret, "AWSPREVIOUS").await,
        vec![first.token]
    );
    assert!(w.versions_with(&secret, "AWSPENDING").await.is_empty());

    // Third: back to the clone, with a new password.
    let third = rotator(&w, &secret)
        .session_policy(SessionPolicy::Wait(Duration::from_secs(5)))
        .rotate()
        .await
        .unwrap();
    assert_eq!(third.username, clone);
    let (_, newest) = login(&w.value(&secret, "AWSCURRENT").await);
    assert!(w.logs_in(&clone, &newest).await);
    assert!(!w.logs_in(&clone, &clone_password).await);
    assert!(w.logs_in(&app, &new_app_password).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_rerun_with_the_same_token_create_the_clone_once() {
    let w = world().await;
    let (app, _, secret) = app_with_master(&w).await;
    let rotator = rotator(&w, &secret);
    let token = new_token();
    assert_eq!(
        rotator.create_secret(&token).await.unwrap().outcome,
        Outcome::Done
    );
    assert_eq!(
        rotator.create_secret(&token).await.unwrap().outcome,
        Outcome::AlreadyDone
    );
    let set = rotator.set_secret(&token).await.unwrap();
    assert_eq!((set.outcome, set.created_role), (Outcome::Done, true));
    assert_eq!(
        set.username.as_deref(),
        Some(format!("{app}_clone").as_str())
    );
    let again = rotator.set_secret(&token).await.unwrap();
    assert_eq!(
        (again.outcome, again.created_role),
        (Outcome::AlreadyDone, false)
    );
    rotator.test_secret(&token).await.unwrap();
    rotator.test_secret(&token).await.unwrap();
    assert_eq!(
        rotator.finish_secret(&token).await.unwrap().outcome,
        Outcome::Done
    );
    for step in Step::ALL {
        assert_eq!(
            rotator.run_step(step, &token).await.unwrap().outcome,
            Outcome::AlreadyDone
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_the_inactive_user_fail_wait_or_are_terminated() {
    let w = world().await;
    let (app, app_password, secret) = app_with_master(&w).await;
    let clone = format!("{app}_clone");
    rotator(&w, &secret).rotate().await.unwrap();
    let (_, clone_password) = login(&w.value(&secret, "AWSCURRENT").await);

    // The inactive user is now the original; a straggler is still logged in as it.
    let straggler = w.session(&app, &app_password).await;

    // Fail: an error naming the role and the count; nothing changed.
    let err = rotator(&w, &secret).rotate().await.unwrap_err();
    assert!(err.is_sessions_in_use(), "{err:?}");
    assert_eq!(err.step(), Some(Step::SetSecret));
    assert_eq!(err.username(), Some(app.as_str()));
    assert_eq!(err.sessions(), Some(1));
    assert!(err.to_string().contains(&app), "{err}");
    assert!(
        w.logs_in(&app, &app_password).await,
        "the password did not change"
    );
    assert_eq!(login(&w.value(&secret, "AWSCURRENT").await).0, clone);
    straggler.simple_query("SELECT 1").await.unwrap();

    // A new rotation does not take the failed one's AWSPENDING over unless told to.
    let failed = w.versions_with(&secret, "AWSPENDING").await.remove(0);
    let err = rotator(&w, &secret).rotate().await.unwrap_err();
    assert!(err.is_takeover_refused(), "{err:?}");
    assert_eq!(err.version_id(), Some(failed.as_str()));

    // Wait: the straggler leaves after 1.5 s (well after setSecret looked); the rotation,
    // resumed with the failed one's token, goes on.
    let leaves = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(straggler);
    });
    let waited = rotator(&w, &secret)
        .session_policy(SessionPolicy::Wait(Duration::from_secs(10)))
        .rotate_with_token(&failed)
        .await
        .unwrap();
    assert_eq!(waited.token, failed);
    leaves.await.unwrap();
    let found = waited.sessions.unwrap();
    assert_eq!(
        (found.username.as_str(), found.found, found.terminated),
        (app.as_str(), 1, 0)
    );
    assert!(found.waited >= Duration::from_millis(100), "{found:?}");
    assert_eq!(login(&w.value(&secret, "AWSCURRENT").await).0, app);

    // Wait that times out fails as Fail does.
    let straggler = w.session(&clone, &clone_password).await;
    let err = rotator(&w, &secret)
        .session_policy(SessionPolicy::Wait(Duration::from_millis(300)))
        .rotate()
        .await
        .unwrap_err();
    assert!(err.is_sessions_in_use(), "{err:?}");
    assert_eq!(
        (err.username(), err.sessions()),
        (Some(clone.as_str()), Some(1))
    );

    // Terminate: the straggler (now of the clone) is ended, the rotation (a new one, taking
    // the failed one's AWSPENDING over) goes on.
    let terminated = rotator(&w, &secret)
        .session_policy(SessionPolicy::Terminate)
        .takeover(true)
        .rotate()
        .await
        .unwrap();
    let found = terminated.sessions.unwrap();
    assert_eq!((found.found, found.terminated), (1, 1));
    assert!(straggler.simple_query("SELECT 1").await.is_err());
    assert_eq!(w.pg.count_sessions(&[&clone]).await.unwrap(), 0);
    let (user, password) = login(&w.value(&secret, "AWSCURRENT").await);
    assert_eq!(user, clone);
    assert!(w.logs_in(&clone, &password).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_master_login_works_and_a_missing_masterarn_is_named() {
    let w = world().await;
    let app = unique_name("app");
    let password = random_password();
    w.pg.create_login_role(&app, &password).await.unwrap();
    let secret = format!("rotate/{app}");
    w.create_secret(&secret, &w.secret_json(&app, &password).to_string())
        .await;

    let err = rotator(&w, &secret).rotate().await.unwrap_err();
    assert!(err.is_malformed(), "{err:?}");
    assert!(err.to_string().contains("masterarn"), "{err}");

    let admin = w.pg.admin_config();
    let admin_password = String::from_utf8(admin.get_password().unwrap().to_vec()).unwrap();
    let master = Master::Login {
        username: admin.get_user().unwrap().to_owned(),
        password: admin_password.clone().into(),
    };
    let rotator = Rotator::new(
        w.client.clone(),
        &secret,
        Strategy::AlternatingUsers(master),
    );
    assert!(!format!("{rotator:?}").contains(&admin_password));
    // The failed rotation's pending version (no database change) is taken over.
    let report = rotator.takeover(true).rotate().await.unwrap();
    assert!(report.created_role);
    let (user, clone_password) = login(&w.value(&secret, "AWSCURRENT").await);
    assert_eq!(user, format!("{app}_clone"));
    assert!(w.logs_in(&user, &clone_password).await);
}
