//! Against real embedded clusters. Without server binaries every test here fails with the
//! message that says how to get them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use credswap_testkit::{TestPostgres, random_password, unique_name};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

async fn start() -> TestPostgres {
    match TestPostgres::start().await {
        Ok(pg) => pg,
        Err(e) => panic!("starting the embedded PostgreSQL failed: {e}"),
    }
}

async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn current_user(client: &Client) -> String {
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// The cluster's data directory and postmaster pid.
async fn data_dir_and_pid(pg: &TestPostgres) -> (PathBuf, u32) {
    let admin = pg.admin().await.unwrap();
    let dir: String = admin
        .query_one("SELECT current_setting('data_directory')", &[])
        .await
        .unwrap()
        .get(0);
    let dir = PathBuf::from(dir);
    let pid_file = std::fs::read_to_string(dir.join("postmaster.pid")).unwrap();
    let pid = pid_file.lines().next().unwrap().trim().parse().unwrap();
    (dir, pid)
}

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn gone(path: &Path) -> bool {
    !path.exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_rejected_and_right_one_logs_in() {
    let pg = start().await;
    assert!(pg.is_embedded());
    assert_eq!(pg.host(), "127.0.0.1");
    assert_eq!(pg.database(), "postgres");

    let role = unique_name("login");
    let password = random_password();
    pg.create_login_role(&role, &password).await.unwrap();

    let err = connect(&pg.config_for(&role, "not-the-password"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");

    let client = connect(&pg.config_for(&role, &password)).await.unwrap();
    assert_eq!(current_user(&client).await, role);

    // The admin login is scram-protected too.
    let err = connect(&pg.config_for("postgres", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");

    // Creating the same role twice reports the server's code.
    let err = pg.create_login_role(&role, &password).await.unwrap_err();
    assert!(err.is_query());
    assert_eq!(err.code(), Some(&SqlState::DUPLICATE_OBJECT), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_run_at_once() {
    let (a, b) = tokio::join!(start(), start());
    assert_ne!(a.port(), b.port());
    for pg in [&a, &b] {
        let admin = pg.admin().await.unwrap();
        let port: String = admin
            .query_one("SELECT current_setting('port')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(port, pg.port().to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_stops_the_server_and_removes_the_directory() {
    let pg = start().await;
    let (data_dir, pid) = data_dir_and_pid(&pg).await;
    let proc_path = PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_path.exists());
    assert!(data_dir.exists());
    let temp_dir = data_dir.parent().unwrap().to_path_buf();

    drop(pg);

    eventually("the postmaster exits", Duration::from_secs(5), || {
        gone(&proc_path)
    })
    .await;
    eventually("the directory is removed", Duration::from_secs(5), || {
        gone(&temp_dir)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_cleans_up_when_a_test_panics() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let pg = start().await;
        let (data_dir, pid) = data_dir_and_pid(&pg).await;
        tx.send((data_dir, pid)).unwrap();
        panic!("deliberate panic with a running cluster");
    });
    let join = task.await;
    assert!(join.unwrap_err().is_panic());
    let (data_dir, pid) = rx.await.unwrap();
    let proc_path = PathBuf::from(format!("/proc/{pid}"));
    let temp_dir = data_dir.parent().unwrap().to_path_buf();

    eventually("the postmaster exits", Duration::from_secs(5), || {
        gone(&proc_path)
    })
    .await;
    eventually("the directory is removed", Duration::from_secs(5), || {
        gone(&temp_dir)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_password_rejects_the_old_one_and_keeps_open_sessions() {
    let pg = start().await;
    let role = unique_name("rot");
    let old = random_password();
    pg.create_login_role(&role, &old).await.unwrap();
    let open = connect(&pg.config_for(&role, &old)).await.unwrap();

    let new = random_password();
    pg.set_password(&role, &new).await.unwrap();

    let err = connect(&pg.config_for(&role, &old)).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");
    let fresh = connect(&pg.config_for(&role, &new)).await.unwrap();
    assert_eq!(current_user(&fresh).await, role);

    // PostgreSQL keeps sessions that authenticated with the old password.
    assert_eq!(current_user(&open).await, role);
    assert_eq!(pg.count_sessions(&[&role]).await.unwrap(), 2);

    let err = pg.set_password("no_such_role", &new).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_OBJECT), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_pair_users_share_the_table() {
    let pg = start().await;
    let prefix = unique_name("pair");
    let passwords = [random_password(), random_password()];
    let pair = pg
        .create_alternating_pair(&prefix, [&passwords[0], &passwords[1]])
        .await
        .unwrap();
    assert_eq!(pair.owner, format!("{prefix}_owner"));
    assert_eq!(pair.users, [format!("{prefix}_a"), format!("{prefix}_b")]);
    assert_eq!(pair.schema, prefix);

    for (user, password) in pair.users.iter().zip(&passwords) {
        let client = connect(&pg.config_for(user, password)).await.unwrap();
        assert_eq!(&current_user(&client).await, user);
        // Qualified, and through the search_path.
        client
            .execute(
                &format!("INSERT INTO {}.items (note) VALUES ($1)", pair.schema),
                &[user],
            )
            .await
            .unwrap();
        client
            .execute("INSERT INTO items (note) VALUES ($1)", &[user])
            .await
            .unwrap();
    }
    for (user, password) in pair.users.iter().zip(&passwords) {
        let client = connect(&pg.config_for(user, password)).await.unwrap();
        let notes: Vec<String> = client
            .query(
                &format!("SELECT note FROM {}.items ORDER BY id", pair.schema),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let expected = [
            &pair.users[0],
            &pair.users[0],
            &pair.users[1],
            &pair.users[1],
        ]
        .map(String::clone);
        assert_eq!(notes, expected);
    }

    // The owner itself cannot log in.
    let err = connect(&pg.config_for(&pair.owner, "x")).await.unwrap_err();
    assert!(err.code().is_some(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_counted_dated_and_terminated() {
    let pg = start().await;
    let role = unique_name("sess");
    let other = unique_name("other");
    let password = random_password();
    pg.create_login_role(&role, &password).await.unwrap();
    pg.create_login_role(&other, &password).await.unwrap();
    assert_eq!(pg.count_sessions(&[&role]).await.unwrap(), 0);

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(&pg.config_for(&role, &password)).await.unwrap());
    }
    let _other_client = connect(&pg.config_for(&other, &password)).await.unwrap();
    assert_eq!(pg.count_sessions(&[&role]).await.unwrap(), 3);
    assert_eq!(pg.count_sessions(&[&role, &other]).await.unwrap(), 4);

    let starts = pg.session_start_times(&role).await.unwrap();
    assert_eq!(starts.len(), 3);
    assert!(starts.windows(2).all(|w| w[0] <= w[1]));

    let between = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let late = connect(&pg.config_for(&role, &password)).await.unwrap();
    assert_eq!(
        pg.count_sessions_started_before(&[&role], between)
            .await
            .unwrap(),
        3
    );
    assert_eq!(pg.count_sessions(&[&role]).await.unwrap(), 4);
    drop(late);
    let deadline = Instant::now() + Duration::from_secs(2);
    while pg.count_sessions(&[&role]).await.unwrap() != 3 {
        assert!(
            Instant::now() < deadline,
            "the dropped client's session lingers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(pg.terminate_sessions(&role).await.unwrap(), 3);
    let deadline = Instant::now() + Duration::from_secs(2);
    while pg.count_sessions(&[&role]).await.unwrap() != 0 {
        assert!(Instant::now() < deadline, "terminated sessions linger");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(clients[0].simple_query("SELECT 1").await.is_err());
    assert_eq!(pg.count_sessions(&[&other]).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_never_shows_the_admin_password() {
    let pg = start().await;
    let admin = pg.admin_config();
    let password = std::str::from_utf8(admin.get_password().unwrap()).unwrap();
    assert_eq!(password.len(), 32);
    let text = format!("{pg:?} {pg:#?}");
    assert!(!text.contains(password), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_admin_url_uses_an_existing_server_and_leaves_it_running() {
    let embedded = start().await;
    let admin = embedded.admin_config();
    let url = embedded.url_for(
        admin.get_user().unwrap(),
        std::str::from_utf8(admin.get_password().unwrap()).unwrap(),
    );

    let remote = TestPostgres::from_admin_url(&url).await.unwrap();
    assert!(!remote.is_embedded());
    assert_eq!(remote.host(), embedded.host());
    assert_eq!(remote.port(), embedded.port());
    assert_eq!(remote.database(), "postgres");

    let role = unique_name("remote");
    let password = random_password();
    remote.create_login_role(&role, &password).await.unwrap();
    let client = connect(&remote.config_for(&role, &password)).await.unwrap();
    assert_eq!(current_user(&client).await, role);
    drop(client);

    drop(remote);
    // The server is still there.
    let client = connect(&embedded.config_for(&role, &password))
        .await
        .unwrap();
    assert_eq!(current_user(&client).await, role);

    let wrong = embedded.url_for("postgres", "wrong-password");
    let err = TestPostgres::from_admin_url(&wrong).await.unwrap_err();
    assert!(err.is_query());
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD));
    assert!(!format!("{err} {err:?}").contains("wrong-password"));
}
