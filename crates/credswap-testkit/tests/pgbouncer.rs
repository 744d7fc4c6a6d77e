//! A real PgBouncer (session mode, SCRAM pass-through with `auth_query`) in front of real embedded
//! clusters. Without `pgbouncer` every test here fails with the message that says how to get it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use credswap_testkit::{TestPgBouncer, TestPostgres, random_password, unique_name};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// A cluster with a PgBouncer in front.
async fn start() -> TestPostgres {
    let pg = match TestPostgres::start().await {
        Ok(pg) => pg,
        Err(e) => panic!("starting the embedded PostgreSQL failed: {e}"),
    };
    match pg.through_pgbouncer().await {
        Ok(pg) => pg,
        Err(e) => panic!("starting PgBouncer failed: {e}"),
    }
}

async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Logs in and runs a query: PgBouncer finishes a client's login before it assigns a server
/// connection, so only a query proves the server accepted the role too.
async fn login(config: &Config) -> Result<(String, i32), tokio_postgres::Error> {
    let client = connect(config).await?;
    let row = client
        .query_one("SELECT current_user::text, inet_server_port()", &[])
        .await?;
    Ok((row.get(0), row.get(1)))
}

async fn eventually<F: Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_of(pg: &TestPostgres) -> String {
    pg.pooler().map(TestPgBouncer::log_tail).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_reach_the_bouncer_and_the_admin_reaches_the_server() {
    let pg = start().await;
    let bouncer = pg.pooler().expect("a pooler is in front");
    assert_eq!(pg.host(), "127.0.0.1");
    assert_eq!(pg.port(), bouncer.port());
    assert_ne!(pg.port(), pg.server_port());
    assert_eq!(bouncer.server_port(), pg.server_port());
    assert_eq!(pg.base_config().get_ports(), &[bouncer.port()]);
    assert_eq!(pg.admin_config().get_ports(), &[pg.server_port()]);
    let url: Config = pg.url_for("u", "p").parse().unwrap();
    assert_eq!(url.get_ports(), &[bouncer.port()]);

    // The admin session is on the server itself: it shows up in pg_stat_activity with the
    // client address of this process, not of PgBouncer, and needs no pooler.
    let admin = pg.admin().await.unwrap();
    let port: i32 = admin
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(port, i32::from(pg.server_port()));

    let debug = format!("{pg:?}");
    assert!(debug.contains("TestPgBouncer"), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_created_on_the_server_logs_in_through_the_bouncer_with_scram() {
    let pg = start().await;
    let role = unique_name("via_bouncer");
    let password = random_password();
    pg.create_login_role(&role, &password).await.unwrap();

    let client = connect(&pg.config_for(&role, &password)).await.unwrap();
    let row = client
        .query_one("SELECT current_user::text, inet_server_port()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), role);
    assert_eq!(row.get::<_, i32>(1), i32::from(pg.server_port()));
    // The session on the server belongs to the role, and the admin (on the server) sees it.
    assert_eq!(pg.count_sessions(&[&role]).await.unwrap(), 1);
    drop(client);

    // The client login itself was SCRAM: PgBouncer asks for SCRAM-SHA-256 (AuthenticationSASL).
    let reply = raw_startup(pg.port(), &[("user", &role), ("database", pg.database())]);
    assert_eq!(reply.tag, b'R', "{reply:?}");
    assert_eq!(
        reply.auth_code,
        Some(10),
        "AuthenticationSASL expected: {reply:?}"
    );
    assert!(
        String::from_utf8_lossy(&reply.body).contains("SCRAM-SHA-256"),
        "{reply:?}"
    );

    let log = log_of(&pg);
    assert!(log.contains(&format!("user={role}")), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_through_the_bouncer_is_08p01_not_28p01() {
    let pg = start().await;
    let role = unique_name("wrong_pw");
    let password = random_password();
    pg.create_login_role(&role, &password).await.unwrap();

    // PgBouncer 1.18 reports a failed SCRAM exchange as a protocol violation, where the server
    // itself says 28P01: an adapter that only looks for 28P01 misses it behind the bouncer.
    let err = connect(&pg.config_for(&role, "not-the-password"))
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("an error from PgBouncer");
    assert_eq!(db.code(), &SqlState::PROTOCOL_VIOLATION, "{err:?}");
    assert_eq!(db.message(), "SASL authentication failed", "{err:?}");
    assert_eq!(db.severity(), "FATAL");

    let mut direct = pg.admin_config();
    direct.user(&role).password("not-the-password");
    let err = connect(&direct).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");

    // An unknown role: also 08P01, "no such user".
    let err = connect(&pg.config_for(&unique_name("nobody"), "x"))
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("an error from PgBouncer");
    assert_eq!(db.code(), &SqlState::PROTOCOL_VIOLATION, "{err:?}");
    assert_eq!(db.message(), "no such user", "{err:?}");

    // The right password still works.
    let (user, _) = login(&pg.config_for(&role, &password)).await.unwrap();
    assert_eq!(user, role);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_options_are_refused_but_extra_float_digits_is_ignored() {
    let pg = start().await;
    let role = unique_name("opts");
    let password = random_password();
    pg.create_login_role(&role, &password).await.unwrap();

    let mut config = pg.config_for(&role, &password);
    config.options("-c statement_timeout=5s");
    let err = connect(&config).await.unwrap_err();
    let db = err.as_db_error().expect("an error from PgBouncer");
    assert_eq!(db.code(), &SqlState::PROTOCOL_VIOLATION, "{err:?}");
    assert_eq!(
        db.message(),
        "unsupported startup parameter: options",
        "{err:?}"
    );

    // Straight to the server the same startup parameter is fine.
    let mut direct = pg.admin_config();
    direct
        .user(&role)
        .password(&password)
        .options("-c statement_timeout=5s");
    let client = connect(&direct).await.unwrap();
    let timeout: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeout, "5s");

    // sqlx sends extra_float_digits=2 at startup: ignored, the login goes on to SCRAM.
    let reply = raw_startup(
        pg.port(),
        &[
            ("user", &role),
            ("database", pg.database()),
            ("extra_float_digits", "2"),
        ],
    );
    assert_eq!(reply.tag, b'R', "{reply:?}");
    // Any other one is refused before authentication.
    let reply = raw_startup(
        pg.port(),
        &[
            ("user", &role),
            ("database", pg.database()),
            ("search_path", "public"),
        ],
    );
    assert_eq!(reply.tag, b'E', "{reply:?}");
    let body = String::from_utf8_lossy(&reply.body);
    assert!(
        body.contains("unsupported startup parameter: search_path"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_on_the_server_counts_for_the_next_login_through_the_bouncer() {
    let pg = start().await;
    let role = unique_name("rotated");
    let old = random_password();
    pg.create_login_role(&role, &old).await.unwrap();
    let open = connect(&pg.config_for(&role, &old)).await.unwrap();
    open.simple_query("SELECT 1").await.unwrap();

    let new = random_password();
    pg.set_password(&role, &new).await.unwrap();

    let err = connect(&pg.config_for(&role, &old)).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::PROTOCOL_VIOLATION), "{err:?}");
    let (user, port) = login(&pg.config_for(&role, &new)).await.unwrap();
    assert_eq!(
        (user.as_str(), port),
        (role.as_str(), i32::from(pg.server_port()))
    );
    // The session opened with the old password lives on, as it does on the server.
    open.simple_query("SELECT 1").await.unwrap();

    // Again, once the bouncer has closed every server connection of the role.
    drop(open);
    eventually(
        "the role's server sessions closing",
        Duration::from_secs(10),
        || async { pg.count_sessions(&[&role]).await.unwrap() == 0 },
    )
    .await;
    let newer = random_password();
    pg.set_password(&role, &newer).await.unwrap();
    let err = connect(&pg.config_for(&role, &new)).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::PROTOCOL_VIOLATION), "{err:?}");
    let (user, _) = login(&pg.config_for(&role, &newer)).await.unwrap();
    assert_eq!(user, role);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sessions_outlive_the_client_until_the_idle_timeout() {
    let pg = start().await;
    let role = unique_name("lingers");
    let password = random_password();
    pg.create_login_role(&role, &password).await.unwrap();

    let client = connect(&pg.config_for(&role, &password)).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    drop(client);
    // The client is gone; the bouncer keeps its server session (younger than server_lifetime)
    // for the next client of the role.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pg.count_sessions(&[&role]).await.unwrap(), 1);

    let closed = Instant::now();
    eventually(
        "the idle server session closing",
        Duration::from_secs(10),
        || async { pg.count_sessions(&[&role]).await.unwrap() == 0 },
    )
    .await;
    assert!(
        closed.elapsed() >= TestPgBouncer::SERVER_IDLE_TIMEOUT / 2,
        "closed after {:?}",
        closed.elapsed()
    );
    let log = log_of(&pg);
    assert!(log.contains("server idle timeout"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_bouncer_stops_the_process_and_removes_its_files() {
    let pg = TestPostgres::start().await.unwrap();
    let bouncer = TestPgBouncer::start(&pg).await.unwrap();
    let pid = bouncer.pid().expect("running");
    let port = bouncer.port();
    let dir = bouncer.config_path().parent().unwrap().to_path_buf();
    let proc_dir = format!("/proc/{pid}");
    assert!(Path::new(&proc_dir).exists());
    assert!(bouncer.log_path().exists(), "{bouncer:?}");
    let ini = std::fs::read_to_string(bouncer.config_path()).unwrap();
    assert!(ini.contains("pool_mode = session"), "{ini}");
    assert!(ini.contains(&format!("auth_user = {}", bouncer.auth_user())));
    let auth_user = bouncer.auth_user().to_owned();
    assert!(!format!("{bouncer:?}").contains("userlist"), "{bouncer:?}");

    // The auth_user is a superuser on the server (the default auth_query reads pg_shadow).
    let admin = pg.admin().await.unwrap();
    let superuser: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
            &[&auth_user],
        )
        .await
        .unwrap()
        .get(0);
    assert!(superuser);

    drop(bouncer);
    assert!(!Path::new(&proc_dir).exists(), "pid {pid} still there");
    assert!(!dir.exists(), "{} still there", dir.display());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    // The server is untouched.
    admin.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_stops_its_pooler_first() {
    let pg = start().await;
    let pid = pg.pooler().unwrap().pid().unwrap();
    let proc_dir = format!("/proc/{pid}");
    assert!(Path::new(&proc_dir).exists());
    drop(pg);
    assert!(!Path::new(&proc_dir).exists(), "pid {pid} still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bouncer_is_stopped_when_a_test_panics() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let pg = start().await;
        let bouncer = pg.pooler().unwrap();
        let dir = bouncer.config_path().parent().unwrap().to_path_buf();
        tx.send((bouncer.pid().unwrap(), bouncer.port(), dir))
            .unwrap();
        panic!("deliberate panic with a running PgBouncer");
    });
    assert!(task.await.unwrap_err().is_panic());
    let (pid, port, dir) = rx.await.unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still there"
    );
    assert!(!dir.exists(), "{} still there", dir.display());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// The first message PgBouncer sends back to a raw startup packet.
#[derive(Debug)]
struct Reply {
    tag: u8,
    /// For an `R` message, the authentication request code.
    auth_code: Option<i32>,
    body: Vec<u8>,
}

/// Sends a startup message with exactly `params` and reads the first reply.
fn raw_startup(port: u16, params: &[(&str, &str)]) -> Reply {
    // Int32 length, Int32 protocol 3.0, then name\0value\0 pairs and a final \0.
    let mut payload = 196_608_u32.to_be_bytes().to_vec();
    for (name, value) in params {
        for text in [name, value] {
            payload.extend_from_slice(text.as_bytes());
            payload.push(0);
        }
    }
    payload.push(0);
    let len = u32::try_from(payload.len() + 4).unwrap();
    let mut buf = len.to_be_bytes().to_vec();
    buf.extend_from_slice(&payload);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&buf).unwrap();
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).unwrap();
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    stream.read_exact(&mut body).unwrap();
    let auth_code = (header[0] == b'R' && body.len() >= 4)
        .then(|| i32::from_be_bytes([body[0], body[1], body[2], body[3]]));
    Reply {
        tag: header[0],
        auth_code,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_are_counted_where_they_were_refused() {
    let pg = start().await;
    let role = unique_name("counted");
    let password = random_password();
    pg.create_login_role(&role, &password)
        .await
        .expect("create role");
    assert_eq!(pg.refused_logins(&role), Some(0));
    for _ in 0..3 {
        let refused = login(&pg.config_for(&role, "not-the-password")).await;
        assert!(refused.is_err(), "a wrong password logged in");
    }
    login(&pg.config_for(&role, &password))
        .await
        .expect("the right password logs in");
    // PgBouncer checks the password itself and logs the refusal a moment later.
    eventually(
        "three refused logins counted in PgBouncer's log",
        Duration::from_secs(3),
        || async { pg.refused_logins(&role) == Some(3) },
    )
    .await;
    let log = log_of(&pg);
    assert!(
        !log.contains(&password),
        "PgBouncer's log holds the password"
    );
}
