//! [`TestMoto`]: a real `moto_server` (the AWS mock) on a free loopback port, and
//! [`FaultProxy`]: an HTTP proxy in front of it that throttles, fails or refuses on demand.
//!
//! Both speak plain HTTP/1.1 over Tokio TCP; the test kit has no AWS SDK dependency.

mod http;
mod proxy;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::daemon::{Daemon, DaemonSpec};
use crate::process::Binary;

pub use proxy::{Dialect, Fault, FaultProxy, FaultStats};

/// Environment variable naming the `moto_server` executable; it overrides the `PATH` search.
pub(crate) const MOTO_SERVER_ENV: &str = "CREDSWAP_MOTO_SERVER";

const HOW_TO_GET_MOTO: &str = "install it with `pip install 'moto[server]'` (it puts `moto_server` \
     on PATH), or point CREDSWAP_MOTO_SERVER at the executable";

/// `moto_server`: the binary, and how it is awaited (up to 10 s per attempt for
/// `GET /moto-api/`; 5 s for one exchange of the kit itself, readiness or reset).
static MOTO: DaemonSpec = DaemonSpec {
    binary: Binary {
        file: "moto_server",
        label: "moto_server",
        env: MOTO_SERVER_ENV,
        how_to: HOW_TO_GET_MOTO,
    },
    name: "moto_server",
    command: "moto_server",
    dir_prefix: "credswap-moto-",
    log_file: "moto_server.log",
    health_path: "/moto-api/",
    ready_timeout: Duration::from_secs(10),
    http_timeout: Duration::from_secs(5),
};

/// A `moto_server` process (the AWS mock, `pip install 'moto[server]'`) for tests: AWS Secrets
/// Manager and every other service moto mocks, in memory, on `127.0.0.1` and a free port.
///
/// Point an AWS SDK client at [`endpoint_url`](Self::endpoint_url) with region
/// [`region`](Self::region) and the dummy static credentials
/// [`access_key_id`](Self::access_key_id) / [`secret_access_key`](Self::secret_access_key).
/// Requests must be SigV4-signed (moto routes by the signature's credential scope); the SDK does
/// that. [`reset`](Self::reset) forgets every secret; [`faulty`](Self::faulty) puts a
/// [`FaultProxy`] in front.
///
/// The binary comes from `CREDSWAP_MOTO_SERVER`, else `moto_server` on `PATH`; without it
/// [`start`](Self::start) fails with [`Error::is_missing_binaries`] and a message that says how
/// to install it. Dropping the value kills the process and reaps it, also while a test unwinds
/// from a panic.
///
/// ```no_run
/// # async fn demo() -> Result<(), credswap_testkit::Error> {
/// let moto = credswap_testkit::TestMoto::start().await?;
/// let url = moto.endpoint_url(); // "http://127.0.0.1:<port>"
/// # let _ = url;
/// moto.reset().await?;
/// # Ok(()) }
/// ```
pub struct TestMoto {
    server: Daemon,
}

impl TestMoto {
    /// The host moto listens on.
    pub const HOST: &'static str = "127.0.0.1";
    /// The region clients must use.
    pub const REGION: &'static str = "us-east-1";
    /// The dummy access key id (moto accepts any).
    pub const ACCESS_KEY_ID: &'static str = "testing";
    /// The dummy secret access key (moto accepts any).
    pub const SECRET_ACCESS_KEY: &'static str = "testing";

    /// Starts `moto_server -H 127.0.0.1 -p <free port>` and waits (up to 10 s per attempt, three
    /// attempts on fresh ports) until `GET /moto-api/` answers 200.
    pub async fn start() -> Result<Self, Error> {
        let mut server = Daemon::new(&MOTO)?;
        server.start(configure).await?;
        Ok(TestMoto { server })
    }

    /// `http://127.0.0.1:<port>`: the endpoint URL for an AWS SDK client.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}:{}", Self::HOST, self.port())
    }

    /// The socket address moto listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The region clients must use: `"us-east-1"`.
    pub fn region(&self) -> &'static str {
        Self::REGION
    }

    /// The dummy access key id: `"testing"`.
    pub fn access_key_id(&self) -> &'static str {
        Self::ACCESS_KEY_ID
    }

    /// The dummy secret access key: `"testing"`.
    pub fn secret_access_key(&self) -> &'static str {
        Self::SECRET_ACCESS_KEY
    }

    /// An AWS SDK config for this server: its endpoint, region and dummy credentials, so a
    /// `aws_sdk_secretsmanager::Client::new(&config)` talks to moto and never to AWS.
    #[cfg(feature = "aws")]
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.endpoint_url())
            .region(aws_config::Region::new(self.region()))
            .credentials_provider(aws_credential_types::Credentials::new(
                self.access_key_id(),
                self.secret_access_key(),
                None,
                None,
                "credswap-testkit",
            ))
            .load()
            .await
    }

    /// The process id of the running `moto_server`, `None` once it has been stopped.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// Forgets every mocked resource (`POST /moto-api/reset`).
    pub async fn reset(&self) -> Result<(), Error> {
        let (status, _) = self
            .server
            .http("POST", "/moto-api/reset", &[], "")
            .await
            .map_err(|e| Error::startup_io("POST /moto-api/reset to moto_server", e))?;
        if status == 200 {
            Ok(())
        } else {
            Err(Error::startup(format!(
                "POST /moto-api/reset to moto_server answered HTTP {status}"
            )))
        }
    }

    /// Kills the process (all state is lost); clients get "connection refused" until
    /// [`restart`](Self::restart). Never panics.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts a stopped moto again on the same port, empty (moto keeps nothing on disk).
    /// Stops it first if it is running.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.server.restart(configure).await
    }

    /// A [`FaultProxy`] in front of this server (see there).
    pub async fn faulty(&self) -> Result<FaultProxy, Error> {
        FaultProxy::start(self.addr()).await
    }

    /// The last lines of moto's output (it logs every request), for error messages and test
    /// failures.
    pub fn log_tail(&self) -> String {
        self.server.log_tail()
    }
}

/// `moto_server`'s arguments: `127.0.0.1` and `port`.
fn configure(command: &mut Command, port: u16, _dir: &Path) {
    command.args(["-H", TestMoto::HOST, "-p", &port.to_string()]);
}

impl fmt::Debug for TestMoto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestMoto")
            .field("endpoint_url", &self.endpoint_url())
            .field("pid", &self.pid())
            .field("program", &self.server.program())
            .field("log_path", &self.server.log_path())
            .finish()
    }
}
