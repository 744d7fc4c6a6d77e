//! [`TestPgBouncer`]: a real PgBouncer in session mode in front of a [`TestPostgres`], with SCRAM
//! pass-through for every role through `auth_user` + `auth_query`.

use std::fmt;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio_postgres::{Config, NoTls};

use crate::cluster::{self, RunAs};
use crate::roles::{quote_ident, quote_literal, random_password, unique_name};
use crate::{Error, TestPostgres, binaries, process};

/// Attempts to start, each on a fresh port (processes started in parallel can race for one).
const START_ATTEMPTS: u32 = 3;
/// How long one attempt waits for a login through the bouncer to work.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(50);
/// Lines of the log quoted in a startup error.
const LOG_TAIL_LINES: usize = 25;

/// A PgBouncer 1.18+ process for tests and drills, in front of a [`TestPostgres`], configured the
/// way sqlx users run it.
///
/// [`start`](Self::start) writes `pgbouncer.ini` and `userlist.txt` into a fresh temp dir and runs
/// `pgbouncer` there, listening on `127.0.0.1` on a free port (no unix socket), with:
///
/// - `* = host=<server> port=<server port>`: every database name is forwarded to the server;
/// - `pool_mode = session`: a client keeps one server connection for its whole life (transaction
///   mode breaks tokio-postgres's named prepared statements, so it cannot test credential
///   following);
/// - `auth_type = scram-sha-256` with SCRAM pass-through: `auth_user` is a fresh superuser role
///   (`credswap_pgbouncer_auth_*`, random password) whose plain password is the only entry of
///   `auth_file`; every other role is looked up with the default `auth_query`
///   (`SELECT usename, passwd FROM pg_shadow WHERE usename=$1`) at each client login, so a role
///   created or a password changed on the server counts for the next login through the bouncer;
/// - `ignore_startup_parameters = extra_float_digits`, as sqlx users set it: any other startup
///   parameter the server would accept (`options=-c ...`) is refused by the bouncer with
///   `unsupported startup parameter`;
/// - `max_client_conn = 1000`, `default_pool_size = 200` (more than any test pool);
/// - `server_idle_timeout` = [`SERVER_IDLE_TIMEOUT`](Self::SERVER_IDLE_TIMEOUT),
///   `server_lifetime` = [`SERVER_LIFETIME`](Self::SERVER_LIFETIME),
///   `server_login_retry` = [`SERVER_LOGIN_RETRY`](Self::SERVER_LOGIN_RETRY).
///
/// # Error codes differ from the server's
///
/// PgBouncer 1.18 answers every failure of its own with SQLSTATE `08P01` (protocol violation),
/// never `28P01`: a wrong password is `08P01` "SASL authentication failed", an unknown role
/// `08P01` "no such user", a refused startup parameter `08P01` "unsupported startup parameter:
/// options", and a failed server login `08P01` with the server's message. Code that recognises
/// authentication failures by `28P01` alone does not recognise them behind this pooler.
///
/// # Server sessions outlive the client
///
/// Closing a client connection does not close its server connection: PgBouncer puts it back in
/// the pool of its (database, role), and hands it to the next client of the same role, even one
/// that logged in with a newer password. So after an application's pool drained the
/// connections of an old credential, `pg_stat_activity` still shows server sessions of that role
/// for a while. Here the while is short: a released server connection older than
/// [`SERVER_LIFETIME`](Self::SERVER_LIFETIME) is closed at once, and an idle one after
/// [`SERVER_IDLE_TIMEOUT`](Self::SERVER_IDLE_TIMEOUT) (PgBouncer's maintenance runs a few times a
/// second). Tests that count stale sessions on the server must allow for that lag; with
/// PgBouncer's defaults (10 minutes idle, 1 hour lifetime) they would linger far longer.
///
/// # Processes and cleanup
///
/// The binary comes from `CREDSWAP_PGBOUNCER`, else `pgbouncer` on `PATH`, else
/// `/usr/sbin/pgbouncer` (Debian/Ubuntu: `apt-get install pgbouncer`). PgBouncer refuses to run
/// as root, so when this process is root it runs as the same unprivileged user as the embedded
/// server (`postgres`, else `nobody`). Dropping the value kills the process, reaps it and removes
/// the directory, also while a test unwinds from a panic. The `auth_user` role stays on the
/// server (an embedded cluster removes it with everything else).
///
/// `Debug` never prints a password; the `auth_user`'s password lives only in `userlist.txt`.
pub struct TestPgBouncer {
    port: u16,
    server_host: String,
    server_port: u16,
    auth_user: String,
    config_path: PathBuf,
    log_path: PathBuf,
    stderr_path: PathBuf,
    run_as: Option<RunAs>,
    child: Option<Child>,
    /// `None` only after the directory has been removed.
    dir: Option<TempDir>,
}

impl TestPgBouncer {
    /// `server_idle_timeout`: an idle server connection is closed after this long without a
    /// client.
    pub const SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
    /// `server_lifetime`: a server connection connected for longer than this is closed when its
    /// client lets go of it, instead of going back to the pool.
    pub const SERVER_LIFETIME: Duration = Duration::from_secs(1);
    /// `server_login_retry`: after a failed server login, how long PgBouncer waits before it
    /// tries the server again for that (database, role) pool (default 15 s). The client whose
    /// login failed gets the server's message with SQLSTATE `08P01` (PgBouncer 1.18 does not pass
    /// the server's code on: `too many connections for role` is `53300` on the server); clients
    /// arriving meanwhile wait for the retry.
    pub const SERVER_LOGIN_RETRY: Duration = Duration::from_secs(1);
    /// The host the bouncer listens on.
    pub const HOST: &'static str = cluster::LOOPBACK;

    /// Starts a PgBouncer in front of `pg`'s server (its [`server_host`](TestPostgres::server_host)
    /// and [`server_port`](TestPostgres::server_port), even if `pg` already has a pooler), and
    /// waits until a login through it works (the admin login when `pg` has an admin password,
    /// else the `auth_user`'s), for up to 10 s per attempt.
    ///
    /// Creates the `auth_user` role on the server through `pg`'s admin connection: a
    /// `LOGIN SUPERUSER` role with a random password, since the default `auth_query` reads
    /// `pg_shadow`. Put the result in front of `pg` with
    /// [`TestPostgres::through_pooler`].
    ///
    /// # Errors
    ///
    /// [`Error::is_missing_binaries`] when `pgbouncer` is not found (the message says how to get
    /// it); [`Error::is_query`] when the `auth_user` cannot be created (the admin must be a
    /// superuser); [`Error::is_startup`] when the process fails or no login through it works in
    /// time (the message includes the tail of its log).
    pub async fn start(pg: &TestPostgres) -> Result<TestPgBouncer, Error> {
        let program = binaries::discover_pgbouncer()?;
        let run_as = RunAs::detect()?;

        let auth_user = unique_name("credswap_pgbouncer_auth");
        let auth_password = random_password();
        create_auth_user(pg, &auth_user, &auth_password).await?;

        let dir = tempfile::Builder::new()
            .prefix("credswap-pgbouncer-")
            .tempdir()
            .map_err(|e| Error::startup_io("creating PgBouncer's temp dir", e))?;
        let mut bouncer = TestPgBouncer {
            port: 0,
            server_host: pg.server_host().to_owned(),
            server_port: pg.server_port(),
            config_path: dir.path().join("pgbouncer.ini"),
            log_path: dir.path().join("pgbouncer.log"),
            stderr_path: dir.path().join("pgbouncer.stderr"),
            auth_user,
            run_as,
            child: None,
            dir: Some(dir),
        };
        bouncer.write_auth_file(&auth_password)?;

        // The admin login exercises the path every role takes (auth_query, then SCRAM
        // pass-through to the server); without an admin password, the auth_user's own login.
        let admin = pg.admin_config();
        let (probe_user, probe_password) = match (admin.get_user(), admin.get_password()) {
            (Some(user), Some(password)) => (user.to_owned(), password.to_vec()),
            _ => (bouncer.auth_user.clone(), auth_password.into_bytes()),
        };

        let mut attempt = 1;
        loop {
            bouncer.port = cluster::free_port()?;
            bouncer.write_config()?;
            bouncer.spawn(&program)?;
            // A fresh config: `Config::host` and `port` append, and must name only the bouncer.
            let mut probe = Config::new();
            probe
                .host(Self::HOST)
                .port(bouncer.port)
                .dbname(pg.database())
                .user(&probe_user)
                .password(&probe_password)
                .connect_timeout(Duration::from_secs(2));
            match bouncer.wait_ready(&probe).await {
                Ok(()) => return Ok(bouncer),
                Err(NotReady::Exited(status)) if attempt < START_ATTEMPTS => {
                    tracing::debug!(port = bouncer.port, %status, attempt, "pgbouncer exited early; retrying on another port");
                    attempt += 1;
                }
                Err(NotReady::Exited(status)) => {
                    return Err(Error::startup(format!(
                        "pgbouncer exited during startup ({status}) on {START_ATTEMPTS} \
                         attempts; its log:\n{}",
                        bouncer.log_tail()
                    )));
                }
                Err(NotReady::Failed(e)) => return Err(e),
            }
        }
    }

    /// The host the bouncer listens on: `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        Self::HOST
    }

    /// The port the bouncer listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host of the server the bouncer forwards to.
    pub fn server_host(&self) -> &str {
        &self.server_host
    }

    /// The port of the server the bouncer forwards to.
    pub fn server_port(&self) -> u16 {
        self.server_port
    }

    /// The role PgBouncer logs in as to run `auth_query` (a superuser on the server). Its own
    /// sessions show up in `pg_stat_activity` under this name.
    pub fn auth_user(&self) -> &str {
        &self.auth_user
    }

    /// The process id of the running `pgbouncer`, `None` once it has been stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The generated `pgbouncer.ini` (holds no password).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// PgBouncer's `logfile`: connections, logins, errors.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// A config for `user` and `password` through the bouncer: its host and port, `database`, and
    /// a 10 s `connect_timeout`.
    pub fn config_for(&self, database: &str, user: &str, password: &str) -> Config {
        let mut config = Config::new();
        config
            .host(Self::HOST)
            .port(self.port)
            .dbname(database)
            .user(user)
            .password(password)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Client logins of `role` that PgBouncer refused (it checks the password itself, against
    /// the server's `pg_shadow`): its log's `closing because: ... authentication failed` lines
    /// for that user.
    pub(crate) fn refused_logins(&self, role: &str) -> usize {
        let who = format!("/{role}@");
        std::fs::read_to_string(&self.log_path)
            .map(|log| {
                log.lines()
                    .filter(|line| {
                        line.contains(&who)
                            && line.contains("closing because")
                            && line.contains("authentication failed")
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// The last lines of PgBouncer's log (or of its stderr, when the log is empty), for error
    /// messages and test failures.
    pub fn log_tail(&self) -> String {
        for path in [&self.log_path, &self.stderr_path] {
            if let Ok(bytes) = std::fs::read(path)
                && !bytes.is_empty()
            {
                return cluster::tail(&String::from_utf8_lossy(&bytes), LOG_TAIL_LINES);
            }
        }
        format!("(nothing in {} yet)", self.log_path.display())
    }

    fn dir(&self) -> &Path {
        // `dir` is only taken in `drop`, which runs last.
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), TempDir::path)
    }

    fn chown(&self, path: &Path) -> Result<(), Error> {
        match &self.run_as {
            Some(run_as) => run_as.chown(path),
            None => Ok(()),
        }
    }

    /// `userlist.txt` with the `auth_user`'s plain password (a SCRAM verifier there fails: the
    /// `auth_user` logs in to the server by itself, with no client keys to pass through).
    fn write_auth_file(&self, auth_password: &str) -> Result<(), Error> {
        let dir = self.dir().to_path_buf();
        self.chown(&dir)?;
        let path = dir.join("userlist.txt");
        cluster::write_private(
            &path,
            &format!(
                "{} {}",
                userlist_quote(&self.auth_user),
                userlist_quote(auth_password)
            ),
        )
        .map_err(|e| Error::startup_io("writing PgBouncer's auth_file", e))?;
        self.chown(&path)
    }

    /// `pgbouncer.ini` for the current port.
    fn write_config(&self) -> Result<(), Error> {
        let text = render_config(&ConfigValues {
            server_host: &self.server_host,
            server_port: self.server_port,
            listen_port: self.port,
            auth_user: &self.auth_user,
            auth_file: &self.dir().join("userlist.txt"),
            log_file: &self.log_path,
        });
        std::fs::write(&self.config_path, text)
            .map_err(|e| Error::startup_io("writing pgbouncer.ini", e))?;
        self.chown(&self.config_path)
    }

    fn spawn(&mut self, program: &Path) -> Result<(), Error> {
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .map_err(|e| Error::startup_io("opening PgBouncer's stderr file", e))?;
        let stdout = stderr
            .try_clone()
            .map_err(|e| Error::startup_io("opening PgBouncer's stderr file", e))?;
        let mut command = Command::new(program);
        command
            .arg(&self.config_path)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        if let Some(run_as) = &self.run_as {
            run_as.apply(&mut command);
        }
        let child = command
            .spawn()
            .map_err(|e| Error::startup_io(format!("starting {}", program.display()), e))?;
        tracing::debug!(
            pid = child.id(),
            port = self.port,
            run_as = self.run_as.as_ref().map(RunAs::name),
            dir = %self.dir().display(),
            "pgbouncer started"
        );
        self.child = Some(child);
        Ok(())
    }

    /// Polls until a login through the bouncer works, the process exits, or time runs out (then
    /// the process is stopped).
    async fn wait_ready(&mut self, probe: &Config) -> Result<(), NotReady> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.reap() {
                return Err(NotReady::Exited(status));
            }
            match probe.connect(NoTls).await {
                Ok((client, connection)) => {
                    drop(client);
                    // Without the client the connection sends Terminate and ends.
                    let _ = connection.await;
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => {
                    let message = format!(
                        "no login through pgbouncer (port {}, forwarding to {}:{}) worked within \
                         {}s; its log:\n{}\nlast connection error",
                        self.port,
                        self.server_host,
                        self.server_port,
                        READY_TIMEOUT.as_secs(),
                        self.log_tail()
                    );
                    self.stop();
                    return Err(NotReady::Failed(Error::startup_postgres(message, e)));
                }
                Err(_) => {}
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Whether the process has exited; reaps it if so.
    fn reap(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Kills the process and reaps it. Never panics.
    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            process::kill_and_reap(child, "pgbouncer");
        }
    }
}

/// Why the bouncer did not become ready.
enum NotReady {
    /// The process exited (for instance, it lost a race for its port).
    Exited(ExitStatus),
    /// Anything else; already a complete error.
    Failed(Error),
}

impl fmt::Debug for TestPgBouncer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestPgBouncer")
            .field("host", &Self::HOST)
            .field("port", &self.port)
            .field("server_host", &self.server_host)
            .field("server_port", &self.server_port)
            .field("auth_user", &self.auth_user)
            .field("pid", &self.pid())
            .field("run_as", &self.run_as.as_ref().map(RunAs::name))
            .field("dir", &self.dir.as_ref().map(TempDir::path))
            .finish()
    }
}

impl Drop for TestPgBouncer {
    /// Kills `pgbouncer` (its server connections close with it), reaps it and removes its
    /// directory. Also runs while a test unwinds from a panic; never panics itself.
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                tracing::warn!(dir = %path.display(), error = %e, "removing PgBouncer's temp dir failed");
            }
        }
    }
}

/// Creates the `auth_user`: `LOGIN SUPERUSER` (the default `auth_query` reads `pg_shadow`, which
/// only superusers can), with the SCRAM verifier of `password` (the password itself never
/// reaches the server).
async fn create_auth_user(pg: &TestPostgres, name: &str, password: &str) -> Result<(), Error> {
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let sql = format!(
        "CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}",
        quote_ident(name),
        quote_literal(&verifier)
    );
    pg.admin().await?.batch_execute(&sql).await.map_err(|e| {
        Error::query(
            format!(
                "creating PgBouncer's auth_user {name} (LOGIN SUPERUSER, so that the default \
                 auth_query can read pg_shadow; the admin must be a superuser)"
            ),
            e,
        )
    })
}

/// What varies between generated `pgbouncer.ini` files.
struct ConfigValues<'a> {
    server_host: &'a str,
    server_port: u16,
    listen_port: u16,
    auth_user: &'a str,
    auth_file: &'a Path,
    log_file: &'a Path,
}

fn render_config(v: &ConfigValues<'_>) -> String {
    format!(
        "; Written by credswap-testkit's TestPgBouncer.\n\
         [databases]\n\
         * = host={server_host} port={server_port}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = {listen_addr}\n\
         listen_port = {listen_port}\n\
         ; No unix socket.\n\
         unix_socket_dir =\n\
         pool_mode = session\n\
         auth_type = scram-sha-256\n\
         auth_file = {auth_file}\n\
         auth_user = {auth_user}\n\
         ; auth_query: the default, SELECT usename, passwd FROM pg_shadow WHERE usename=$1\n\
         ignore_startup_parameters = extra_float_digits\n\
         max_client_conn = 1000\n\
         default_pool_size = 200\n\
         server_idle_timeout = {idle}\n\
         server_lifetime = {lifetime}\n\
         server_login_retry = {login_retry}\n\
         logfile = {log_file}\n\
         log_stats = 0\n",
        server_host = v.server_host,
        server_port = v.server_port,
        listen_addr = TestPgBouncer::HOST,
        listen_port = v.listen_port,
        auth_file = v.auth_file.display(),
        auth_user = v.auth_user,
        idle = TestPgBouncer::SERVER_IDLE_TIMEOUT.as_secs(),
        lifetime = TestPgBouncer::SERVER_LIFETIME.as_secs(),
        login_retry = TestPgBouncer::SERVER_LOGIN_RETRY.as_secs(),
        log_file = v.log_file.display(),
    )
}

/// `text` as a double-quoted `auth_file` field (inner `"` doubled).
fn userlist_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_what_sqlx_users_run() {
        let text = render_config(&ConfigValues {
            server_host: "127.0.0.1",
            server_port: 5433,
            listen_port: 6432,
            auth_user: "credswap_pgbouncer_auth_x",
            auth_file: Path::new("/tmp/d/userlist.txt"),
            log_file: Path::new("/tmp/d/pgbouncer.log"),
        });
        for line in [
            "* = host=127.0.0.1 port=5433",
            "listen_addr = 127.0.0.1",
            "listen_port = 6432",
            "unix_socket_dir =\n",
            "pool_mode = session",
            "auth_type = scram-sha-256",
            "auth_file = /tmp/d/userlist.txt",
            "auth_user = credswap_pgbouncer_auth_x",
            "ignore_startup_parameters = extra_float_digits\n",
            "max_client_conn = 1000",
            "default_pool_size = 200",
            "server_idle_timeout = 1\n",
            "server_lifetime = 1\n",
            "server_login_retry = 1\n",
            "logfile = /tmp/d/pgbouncer.log",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(
            !text.contains("auth_query ="),
            "the default auth_query is used"
        );
    }

    #[test]
    fn userlist_fields_are_quoted() {
        assert_eq!(userlist_quote("app"), "\"app\"");
        assert_eq!(userlist_quote("a\"b"), "\"a\"\"b\"");
    }
}
