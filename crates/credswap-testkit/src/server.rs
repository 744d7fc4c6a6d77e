//! [`TestPostgres`]: an ephemeral cluster, or an existing server reached through an admin URL.

use std::fmt;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::Error;
use crate::cluster::{self, Cluster, NotReady};
use crate::pgbouncer::TestPgBouncer;
use crate::roles::random_password;
use crate::tls::ClusterTls;

/// Environment variable holding an admin URL; when set, [`TestPostgres::from_env`] uses that
/// server instead of starting one.
const ADMIN_URL_ENV: &str = "CREDSWAP_TEST_ADMIN_URL";

/// Attempts to start the server, each on a fresh port (clusters started in parallel can race for
/// one).
const START_ATTEMPTS: u32 = 3;
/// How long one attempt waits for the server to accept the admin login.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(50);
/// How long a running server may keep rejecting the admin password before that is an error (a
/// short while is tolerated: a lost port race can briefly route the probe to another cluster).
const AUTH_FAILURE_GRACE: Duration = Duration::from_secs(5);
/// `connect_timeout` of every config handed out.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A PostgreSQL server for tests, examples and drills, with an admin login that can create roles
/// and change passwords.
///
/// Either an embedded ephemeral cluster ([`start`](Self::start)) that this value owns and removes
/// on drop, or an existing server ([`from_admin_url`](Self::from_admin_url)) that is left running.
///
/// Every login on an embedded cluster uses `scram-sha-256`, so a wrong password is rejected with
/// SQLSTATE `28P01` exactly as in production.
///
/// # Behind a pooler
///
/// [`through_pooler`](Self::through_pooler) (or [`through_pgbouncer`](Self::through_pgbouncer))
/// puts a [`TestPgBouncer`] in front: from then on [`host`](Self::host), [`port`](Self::port),
/// [`base_config`](Self::base_config), [`config_for`](Self::config_for) and
/// [`url_for`](Self::url_for) give the pooler's endpoint, for the pools under test, while the
/// admin work ([`admin_config`](Self::admin_config), [`admin`](Self::admin), creating roles,
/// changing passwords, counting sessions in `pg_stat_activity`) still goes straight to the
/// server. [`server_host`](Self::server_host) and [`server_port`](Self::server_port) always name
/// the server.
///
/// `Debug` never prints the admin password.
pub struct TestPostgres {
    /// The server's host, whether or not a pooler is in front.
    host: String,
    /// The server's port, whether or not a pooler is in front.
    port: u16,
    database: String,
    admin_user: String,
    admin_password: Option<SecretString>,
    /// Declared before `cluster`, and dropped first in `Drop`: the pooler stops before the server.
    pooler: Option<TestPgBouncer>,
    cluster: Option<Cluster>,
    /// The certificates of a cluster started with [`start_tls`](Self::start_tls).
    tls: Option<ClusterTls>,
}

impl TestPostgres {
    /// Start an ephemeral cluster: own temp dir, free loopback port, scram-sha-256 for every login
    /// (host and local), fsync=off, max_connections=300 (more with
    /// [`start_with_max_connections`](Self::start_with_max_connections)),
    /// password_encryption=scram-sha-256.
    ///
    /// When this process runs as root, `initdb` and `postgres` run as the `postgres` user (else
    /// `nobody`). The binaries are taken from `CREDSWAP_PG_BINDIR`, else `initdb` on `PATH`, else
    /// `pg_config --bindir`, else the highest `/usr/lib/postgresql/*/bin`.
    ///
    /// # Errors
    ///
    /// [`Error::is_missing_binaries`] when no server binaries are found (the message says how to
    /// get them); [`Error::is_startup`] when `initdb` or the server fails (the message includes the
    /// tail of the server log).
    pub async fn start() -> Result<TestPostgres, Error> {
        Self::start_cluster(false, cluster::DEFAULT_MAX_CONNECTIONS).await
    }

    /// [`start`](Self::start) with the server's `max_connections` set to `max_connections`
    /// instead of 300: for drills of many pools at once (a fleet of 300 pools of 2 needs 600
    /// sessions and a margin for the admin, the sampler and the rotator). Each connection slot
    /// costs the server some shared memory (a few hundred kB at most), nothing until used.
    ///
    /// # Errors
    ///
    /// Those of [`start`](Self::start); [`Error::is_startup`] when `max_connections` is 0 or
    /// above PostgreSQL's limit (262143), or the server refuses it (not enough shared memory).
    pub async fn start_with_max_connections(max_connections: u32) -> Result<TestPostgres, Error> {
        if !(1..=262_143).contains(&max_connections) {
            return Err(Error::startup(format!(
                "max_connections must be between 1 and 262143, not {max_connections}"
            )));
        }
        Self::start_cluster(false, max_connections).await
    }

    /// [`start`](Self::start) with TLS: a CA and a server certificate for `localhost` and
    /// `127.0.0.1` are generated for this cluster (ECDSA P-256, [`rcgen`]), the server runs with
    /// `ssl = on`, and every TCP login needs TLS (`hostssl ... scram-sha-256`, `hostnossl ...
    /// reject`), except the admin user's: the test kit's own helpers ([`admin`](Self::admin), the
    /// scenario's rotator and sampler) connect without TLS. [`tls`](Self::tls) gives the CA
    /// certificate for clients to trust, [`tls_base_config`](Self::tls_base_config) a config that
    /// verifies the server's name, and
    /// [`session_encryption`](Self::session_encryption) what `pg_stat_ssl` says of the sessions.
    ///
    /// # Errors
    ///
    /// Those of [`start`](Self::start); [`Error::is_startup`] when the certificates cannot be
    /// made or written.
    pub async fn start_tls() -> Result<TestPostgres, Error> {
        Self::start_cluster(true, cluster::DEFAULT_MAX_CONNECTIONS).await
    }

    async fn start_cluster(with_tls: bool, max_connections: u32) -> Result<TestPostgres, Error> {
        let password = random_password();
        let init_password = password.clone();
        let (mut cluster, tls) = tokio::task::spawn_blocking(move || {
            let mut cluster = Cluster::init(&init_password)?;
            cluster.max_connections = max_connections;
            let tls = if with_tls {
                Some(ClusterTls::install(&cluster)?)
            } else {
                None
            };
            Ok::<_, Error>((cluster, tls))
        })
        .await
        .map_err(|e| Error::startup(format!("the initdb task failed: {e}")))??;
        let admin_password = SecretString::from(password);

        let mut attempt = 1;
        loop {
            let port = cluster::free_port()?;
            cluster.spawn(port)?;
            let mut server = TestPostgres {
                host: cluster::LOOPBACK.to_owned(),
                port,
                database: cluster::ADMIN_DATABASE.to_owned(),
                admin_user: cluster::ADMIN_USER.to_owned(),
                admin_password: Some(admin_password.clone()),
                pooler: None,
                cluster: None,
                tls: None,
            };
            match wait_ready(&mut cluster, server.admin_config()).await {
                Ok(()) => {
                    server.cluster = Some(cluster);
                    server.tls = tls;
                    return Ok(server);
                }
                Err(NotReady::Exited(status)) if attempt < START_ATTEMPTS => {
                    tracing::debug!(port, %status, attempt, "postgres exited early; retrying on another port");
                    attempt += 1;
                }
                Err(NotReady::Exited(status)) => {
                    return Err(Error::startup(format!(
                        "postgres exited during startup ({status}) on {START_ATTEMPTS} attempts; \
                         server log:\n{}",
                        cluster.log_tail()
                    )));
                }
                Err(NotReady::Failed(e)) => return Err(e),
            }
        }
    }

    /// Use an existing server (a container, a CI service) through a superuser/CREATEROLE admin URL
    /// (`postgres://user:pass@host:port/db`). Drop leaves that server running.
    ///
    /// The port defaults to 5432 and the database to the user name. Connections use no TLS.
    ///
    /// # Errors
    ///
    /// [`Error::is_invalid_url`] when the URL cannot be parsed or lacks a host or user (the
    /// message never repeats the URL); [`Error::is_query`] when the admin login fails.
    pub async fn from_admin_url(url: &str) -> Result<TestPostgres, Error> {
        const EXPECTED: &str = "expected postgres://user:password@host:port/database";
        let config: Config = url.parse().map_err(|_| {
            Error::invalid_url(format!("the admin URL cannot be parsed ({EXPECTED})"))
        })?;
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            Some(Host::Unix(path)) => path.to_string_lossy().into_owned(),
            None => {
                return Err(Error::invalid_url(format!(
                    "the admin URL names no host ({EXPECTED})"
                )));
            }
        };
        let Some(user) = config.get_user().filter(|user| !user.is_empty()) else {
            return Err(Error::invalid_url(format!(
                "the admin URL names no user ({EXPECTED})"
            )));
        };
        let admin_password = match config.get_password() {
            Some(bytes) => Some(SecretString::from(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| Error::invalid_url("the admin URL's password is not UTF-8"))?,
            )),
            None => None,
        };
        let server = TestPostgres {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            database: config.get_dbname().unwrap_or(user).to_owned(),
            admin_user: user.to_owned(),
            admin_password,
            pooler: None,
            cluster: None,
            tls: None,
        };
        drop(server.admin().await?);
        Ok(server)
    }

    /// If env `CREDSWAP_TEST_ADMIN_URL` is set (and not empty),
    /// [`from_admin_url`](Self::from_admin_url) with it; else [`start`](Self::start).
    ///
    /// # Errors
    ///
    /// Those of the constructor used.
    pub async fn from_env() -> Result<TestPostgres, Error> {
        match std::env::var(ADMIN_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Self::from_admin_url(url.trim()).await,
            _ => Self::start().await,
        }
    }

    /// Restarts an embedded cluster as a quick maintenance restart does: a fast shutdown (every
    /// session ends), `down` with nothing listening on the port, then the same port again.
    /// Returns once the admin login works again.
    ///
    /// # Errors
    ///
    /// [`Error::is_startup`] for a server reached through an admin URL (not ours to restart),
    /// or when the server does not come back.
    pub async fn restart(&mut self, down: Duration) -> Result<(), Error> {
        let admin = self.admin_config();
        let port = self.port;
        let Some(cluster) = self.cluster.as_mut() else {
            return Err(Error::startup(
                "only an embedded cluster can be restarted (this server was given by URL)",
            ));
        };
        tokio::task::block_in_place(|| cluster.restart(port, down))?;
        match wait_ready(cluster, admin).await {
            Ok(()) => Ok(()),
            Err(NotReady::Exited(status)) => Err(Error::startup(format!(
                "postgres exited while restarting ({status}); server log:\n{}",
                cluster.log_tail()
            ))),
            Err(NotReady::Failed(e)) => Err(e),
        }
    }

    /// Whether this is an embedded cluster owned (and removed on drop) by this value.
    pub fn is_embedded(&self) -> bool {
        self.cluster.is_some()
    }

    /// The certificates of a cluster started with [`start_tls`](Self::start_tls): the CA to
    /// trust and the name the server's certificate carries. `None` for any other server.
    pub fn tls(&self) -> Option<&ClusterTls> {
        self.tls.as_ref()
    }

    /// [`base_config`](Self::base_config) for a client that verifies the server's certificate
    /// (`sslmode=verify-full` with a verifying connector such as `tokio-postgres-rustls`): the
    /// host is the certificate's name ([`ClusterTls::server_name`], `localhost`), `hostaddr`
    /// the address it listens on, and `sslmode=require`, so a connection is TLS or nothing. On a
    /// server without [`tls`](Self::tls), [`base_config`](Self::base_config) with
    /// `sslmode=require`.
    pub fn tls_base_config(&self) -> Config {
        let mut config = match (
            &self.tls,
            &self.pooler,
            self.host.parse::<std::net::IpAddr>(),
        ) {
            (Some(tls), None, Ok(addr)) => {
                let mut config = config_at(tls.server_name(), self.port, &self.database);
                config.hostaddr(addr);
                config
            }
            _ => self.base_config(),
        };
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
        config
    }

    /// Puts `pooler` in front of this server: afterwards [`host`](Self::host),
    /// [`port`](Self::port), [`base_config`](Self::base_config), [`config_for`](Self::config_for)
    /// and [`url_for`](Self::url_for) point at the pooler, while [`admin_config`](Self::admin_config)
    /// and [`admin`](Self::admin) (and so every role, password and session helper) keep talking
    /// to the server directly. The pooler is stopped before the server when this value drops. A
    /// pooler set before is replaced (and stopped).
    ///
    /// `pooler` should have been started for this server
    /// ([`TestPgBouncer::start`]`(&self)`); a pooler of another server is accepted but logs a
    /// warning, since the pools under test would then reach a different server than the admin.
    pub fn through_pooler(mut self, pooler: TestPgBouncer) -> TestPostgres {
        if (pooler.server_host(), pooler.server_port()) != (self.host.as_str(), self.port) {
            tracing::warn!(
                server = %format!("{}:{}", self.host, self.port),
                pooler_server = %format!("{}:{}", pooler.server_host(), pooler.server_port()),
                "the pooler put in front of this server forwards to another server"
            );
        }
        self.pooler = Some(pooler);
        self
    }

    /// Starts a [`TestPgBouncer`] for this server and puts it in front
    /// ([`through_pooler`](Self::through_pooler)).
    ///
    /// # Errors
    ///
    /// Those of [`TestPgBouncer::start`].
    pub async fn through_pgbouncer(self) -> Result<TestPostgres, Error> {
        let pooler = TestPgBouncer::start(&self).await?;
        Ok(self.through_pooler(pooler))
    }

    /// Logins of `role` refused so far, counted where they were refused: the server's log
    /// (`password authentication failed for user "role"`) and, behind a pooler, the pooler's
    /// (PgBouncer checks the password itself). `None` for a server this kit did not start (its
    /// log is not readable here).
    pub fn refused_logins(&self, role: &str) -> Option<usize> {
        let cluster = self.cluster.as_ref()?;
        let server = cluster.refused_logins(role);
        let pooler = self.pooler.as_ref().map_or(0, |p| p.refused_logins(role));
        Some(server + pooler)
    }

    /// Logins of `role` the server refused because its password had expired (`VALID UNTIL`
    /// passed; the [`TokenGate`](crate::TokenGate) sets it at each token's margin). `None` for a
    /// server this kit did not start.
    pub fn expired_logins(&self, role: &str) -> Option<usize> {
        Some(self.cluster.as_ref()?.expired_logins(role))
    }

    /// When the server authorized each login of `role` (its log, `log_connections = on`): what
    /// the connect pacing cases count per second. Behind a pooler these are the pooler's logins.
    /// `None` for a server this kit did not start.
    pub fn logins(&self, role: &str) -> Option<Vec<std::time::SystemTime>> {
        Some(self.cluster.as_ref()?.logins(role))
    }

    /// When the server authorized each login of the roles `wanted` accepts (its log read once:
    /// for runs whose roles are not known in advance, such as a Vault dynamic role's users).
    /// Not the pooler's. `None` for a server this kit did not start.
    pub fn logins_where(
        &self,
        wanted: impl Fn(&str) -> bool,
    ) -> Option<Vec<std::time::SystemTime>> {
        Some(self.cluster.as_ref()?.logins_where(&wanted))
    }

    /// Refused logins of the roles `wanted` accepts, from the server's log (read once). Not the
    /// pooler's. `None` for a server this kit did not start.
    pub fn refused_logins_where(&self, wanted: impl Fn(&str) -> bool) -> Option<usize> {
        Some(self.cluster.as_ref()?.refused_logins_where(&wanted))
    }

    /// The pooler in front of this server, if [`through_pooler`](Self::through_pooler) set one.
    pub fn pooler(&self) -> Option<&TestPgBouncer> {
        self.pooler.as_ref()
    }

    /// Where the pools under test connect: the pooler's host when one is set, else the server's
    /// (`"127.0.0.1"` for an embedded cluster, a path for a unix socket).
    pub fn host(&self) -> &str {
        self.pooler.as_ref().map_or(&self.host, TestPgBouncer::host)
    }

    /// Where the pools under test connect: the pooler's port when one is set, else the server's.
    pub fn port(&self) -> u16 {
        self.pooler.as_ref().map_or(self.port, TestPgBouncer::port)
    }

    /// The server's own host, also when a pooler is in front.
    pub fn server_host(&self) -> &str {
        &self.host
    }

    /// The server's own port, also when a pooler is in front.
    pub fn server_port(&self) -> u16 {
        self.port
    }

    /// The database connected to: `"postgres"` for an embedded cluster.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Host, port, dbname and a 10 s `connect_timeout`; no user, no password. Host and port are
    /// the pooler's when one is in front ([`host`](Self::host), [`port`](Self::port)).
    pub fn base_config(&self) -> Config {
        config_at(self.host(), self.port(), &self.database)
    }

    /// [`base_config`](Self::base_config) plus the given user and password (through the pooler
    /// when one is in front).
    pub fn config_for(&self, user: &str, password: &str) -> Config {
        let mut config = self.base_config();
        config.user(user).password(password);
        config
    }

    /// The server's own host and port (never the pooler's), dbname, a 10 s `connect_timeout`, and
    /// the admin user and password.
    pub fn admin_config(&self) -> Config {
        let mut config = config_at(&self.host, self.port, &self.database);
        config.user(&self.admin_user);
        if let Some(password) = &self.admin_password {
            config.password(password.expose_secret());
        }
        config
    }

    /// A `postgres://` URL for a user, with user, password and database percent-encoded
    /// (for sqlx users); it points at the pooler when one is in front.
    pub fn url_for(&self, user: &str, password: &str) -> String {
        let credentials = format!("{}:{}", percent_encode(user), percent_encode(password));
        let database = percent_encode(&self.database);
        let (host, port) = (self.host(), self.port());
        if host.starts_with('/') {
            format!(
                "postgres://{credentials}@/{database}?host={}&port={port}",
                percent_encode(host),
            )
        } else if host.contains(':') {
            format!("postgres://{credentials}@[{host}]:{port}/{database}")
        } else {
            format!("postgres://{credentials}@{host}:{port}/{database}")
        }
    }

    /// A connected admin client, straight to the server (never through the pooler); its
    /// connection task is spawned with `tokio::spawn`, so this must be called within a Tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// [`Error::is_query`] when the connection or login fails.
    pub async fn admin(&self) -> Result<Client, Error> {
        let (client, connection) = self
            .admin_config()
            .connect(NoTls)
            .await
            .map_err(|e| Error::query("connecting as the admin user", e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
        Ok(client)
    }
}

/// Host, port, dbname and the `connect_timeout` of every config handed out.
fn config_at(host: &str, port: u16, database: &str) -> Config {
    let mut config = Config::new();
    config
        .host(host)
        .port(port)
        .dbname(database)
        .connect_timeout(CONNECT_TIMEOUT);
    config
}

/// Polls until the admin login succeeds, the child exits, or time runs out.
async fn wait_ready(cluster: &mut Cluster, mut config: Config) -> Result<(), NotReady> {
    config.connect_timeout(Duration::from_secs(2));
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut rejected_since: Option<Instant> = None;
    loop {
        if let Some(status) = cluster.exited().map_err(NotReady::Failed)? {
            return Err(NotReady::Exited(status));
        }
        match config.connect(NoTls).await {
            Ok((client, connection)) => {
                drop(client);
                // Without the client the connection sends Terminate and ends.
                let _ = connection.await;
                return Ok(());
            }
            Err(e) if e.code() == Some(&SqlState::INVALID_PASSWORD) => {
                let since = *rejected_since.get_or_insert_with(Instant::now);
                if since.elapsed() > AUTH_FAILURE_GRACE {
                    return Err(NotReady::Failed(Error::startup_postgres(
                        "the embedded server rejects its admin password",
                        e,
                    )));
                }
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(NotReady::Failed(Error::startup_postgres(
                    format!(
                        "the embedded server did not accept connections within {}s; server \
                         log:\n{}\nlast connection error",
                        READY_TIMEOUT.as_secs(),
                        cluster.log_tail()
                    ),
                    e,
                )));
            }
            Err(_) => {}
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl fmt::Debug for TestPostgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestPostgres")
            .field("embedded", &self.is_embedded())
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("admin_user", &self.admin_user)
            .field(
                "admin_password",
                &self.admin_password.as_ref().map(|_| "[redacted]"),
            )
            .field("pooler", &self.pooler)
            .field("cluster", &self.cluster)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Drop for TestPostgres {
    /// Stops the pooler first, if one is in front. Then, for an embedded cluster: stops the
    /// server (`pg_ctl stop -m fast` as the server's user, else kill), waits for it and removes
    /// its directory. Also runs while a test unwinds from a panic; never panics itself. An
    /// existing server is left running.
    fn drop(&mut self) {
        drop(self.pooler.take());
        drop(self.cluster.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(host: &str) -> TestPostgres {
        TestPostgres {
            host: host.to_owned(),
            port: 5433,
            database: "app db".to_owned(),
            admin_user: "admin".to_owned(),
            admin_password: Some(SecretString::from("hunter2-secret".to_owned())),
            pooler: None,
            cluster: None,
            tls: None,
        }
    }

    #[test]
    fn percent_encoding_keeps_unreserved_only() {
        assert_eq!(percent_encode("abc-._~XYZ09"), "abc-._~XYZ09");
        assert_eq!(
            percent_encode("p@ss:w/rd%?#é"),
            "p%40ss%3Aw%2Frd%25%3F%23%C3%A9"
        );
    }

    #[test]
    fn urls_round_trip_through_the_driver_parser() {
        for host in ["db.example", "::1", "/run/postgresql"] {
            let tp = remote(host);
            let url = tp.url_for("us@r", "p:w/d?#%");
            let config: Config = url.parse().unwrap();
            assert_eq!(config.get_user(), Some("us@r"));
            assert_eq!(config.get_password(), Some(&b"p:w/d?#%"[..]));
            assert_eq!(config.get_dbname(), Some("app db"));
            assert_eq!(config.get_ports(), &[5433]);
        }
    }

    #[test]
    fn configs_carry_only_what_they_promise() {
        let tp = remote("db.example");
        let base = tp.base_config();
        assert_eq!(base.get_user(), None);
        assert_eq!(base.get_password(), None);
        assert_eq!(base.get_dbname(), Some("app db"));
        assert_eq!(base.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        let admin = tp.admin_config();
        assert_eq!(admin.get_user(), Some("admin"));
        assert_eq!(admin.get_password(), Some(&b"hunter2-secret"[..]));
        let user = tp.config_for("u", "pw");
        assert_eq!(user.get_password(), Some(&b"pw"[..]));
    }

    #[test]
    fn debug_redacts_the_admin_password() {
        let text = format!("{:?}", remote("db.example"));
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }

    #[tokio::test]
    async fn bad_admin_urls_are_rejected_without_echoing_them() {
        for url in [
            "postgres://admin:s3cr3t-pw@db.example:notaport/x",
            "postgres://:s3cr3t-pw@db.example/x",
            "not a url s3cr3t-pw",
        ] {
            let err = TestPostgres::from_admin_url(url).await.unwrap_err();
            assert!(err.is_invalid_url(), "{err:?}");
            assert!(!format!("{err} {err:?}").contains("s3cr3t"), "{err:?}");
        }
    }
}
