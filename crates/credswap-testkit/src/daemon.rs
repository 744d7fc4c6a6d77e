//! [`Daemon`]: a server binary the test kit runs as a child process on a free loopback port
//! (OpenBao's dev server, moto), in its own temp dir with a log file, ready once a health path
//! answers HTTP 200; and the one-request HTTP client the kit talks to it with.

use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::{self, Binary};
use crate::{Error, cluster};

/// Attempts to start, each on a fresh port (processes started in parallel can race for one).
const START_ATTEMPTS: u32 = 3;
/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(50);
/// Lines of the log quoted in a startup error.
const LOG_TAIL_LINES: usize = 25;

/// What differs between the servers the kit runs as a [`Daemon`], besides their arguments.
#[derive(Debug)]
pub(crate) struct DaemonSpec {
    /// Where the executable comes from.
    pub(crate) binary: Binary,
    /// How messages and logs name the server: `"bao"`.
    pub(crate) name: &'static str,
    /// How messages name the command it runs: `"bao server -dev"`.
    pub(crate) command: &'static str,
    /// The prefix of its temp dir's name: `"credswap-bao-"`.
    pub(crate) dir_prefix: &'static str,
    /// The name of its log file (stdout and stderr) in the temp dir.
    pub(crate) log_file: &'static str,
    /// The path whose `GET` answers 200 once the server serves.
    pub(crate) health_path: &'static str,
    /// How long one start attempt waits for the health path.
    pub(crate) ready_timeout: Duration,
    /// How long one HTTP exchange of the kit with the server may take.
    pub(crate) http_timeout: Duration,
}

/// A server process on `127.0.0.1` and a free port, with its own temp dir (its working
/// directory) and log file. Dropping it kills the process, reaps it and removes the directory,
/// also while a test unwinds.
pub(crate) struct Daemon {
    spec: &'static DaemonSpec,
    program: PathBuf,
    port: u16,
    log_path: PathBuf,
    child: Option<Child>,
    dir: Option<TempDir>,
}

/// Why a server did not become ready.
enum NotReady {
    /// The process exited (for instance, it lost a race for its port).
    Exited(ExitStatus),
    /// Anything else; already a complete error.
    Failed(Error),
}

impl Daemon {
    /// Finds the binary and makes the temp dir; nothing runs before [`start`](Self::start).
    pub(crate) fn new(spec: &'static DaemonSpec) -> Result<Self, Error> {
        let program = spec.binary.discover()?;
        let dir = tempfile::Builder::new()
            .prefix(spec.dir_prefix)
            .tempdir()
            .map_err(|e| Error::startup_io(format!("creating {}'s temp dir", spec.name), e))?;
        Ok(Daemon {
            spec,
            program,
            port: 0,
            log_path: dir.path().join(spec.log_file),
            child: None,
            dir: Some(dir),
        })
    }

    /// Starts the server on a free port and waits (up to the spec's `ready_timeout`) until
    /// `GET <health_path>` answers 200. A process that exits meanwhile is started again on a
    /// fresh port, three attempts in all. `configure` adds the arguments and environment, given
    /// the port and the temp dir; the working directory, stdin and the log are set already.
    pub(crate) async fn start<F>(&mut self, configure: F) -> Result<(), Error>
    where
        F: Fn(&mut Command, u16, &Path),
    {
        let mut attempt = 1;
        loop {
            self.port = cluster::free_port()?;
            match self.spawn_and_wait(&configure).await {
                Ok(()) => return Ok(()),
                Err(NotReady::Exited(status)) if attempt < START_ATTEMPTS => {
                    tracing::debug!(
                        port = self.port,
                        %status,
                        attempt,
                        "{} exited early; retrying on another port",
                        self.spec.name
                    );
                    attempt += 1;
                }
                Err(NotReady::Exited(status)) => {
                    return Err(Error::startup(format!(
                        "{} exited during startup ({status}) on {START_ATTEMPTS} attempts; its \
                         output:\n{}",
                        self.spec.command,
                        self.log_tail()
                    )));
                }
                Err(NotReady::Failed(e)) => return Err(e),
            }
        }
    }

    /// Stops the server if it runs and starts it again on the same port, waiting as
    /// [`start`](Self::start) does (one attempt).
    pub(crate) async fn restart<F>(&mut self, configure: F) -> Result<(), Error>
    where
        F: Fn(&mut Command, u16, &Path),
    {
        self.stop();
        match self.spawn_and_wait(&configure).await {
            Ok(()) => Ok(()),
            Err(NotReady::Exited(status)) => Err(Error::startup(format!(
                "{} exited during restart on port {} ({status}); its output:\n{}",
                self.spec.name,
                self.port,
                self.log_tail()
            ))),
            Err(NotReady::Failed(e)) => Err(e),
        }
    }

    /// The port the server listens on (0 before [`start`](Self::start)).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The socket address the server listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The process id of the running server, `None` once it has been stopped.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The executable.
    pub(crate) fn program(&self) -> &Path {
        &self.program
    }

    /// The server's log file (its stdout and stderr).
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of the server's output, for error messages and test failures.
    pub(crate) fn log_tail(&self) -> String {
        match std::fs::read(&self.log_path) {
            Ok(bytes) if !bytes.is_empty() => {
                cluster::tail(&String::from_utf8_lossy(&bytes), LOG_TAIL_LINES)
            }
            _ => format!("(nothing in {} yet)", self.log_path.display()),
        }
    }

    /// Kills the process and reaps it. Never panics.
    pub(crate) fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            process::kill_and_reap(child, self.spec.name);
        }
    }

    /// One HTTP/1.0 exchange with the server (it closes the connection after it, and never
    /// chunks), within the spec's `http_timeout`: the status and the body. `headers` come after
    /// `Host` and `Content-Length`.
    pub(crate) async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        let addr = self.addr();
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await?;
            let mut request = format!(
                "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
                body.len()
            );
            for (name, value) in headers {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
            request.push_str("\r\n");
            request.push_str(body);
            stream.write_all(request.as_bytes()).await?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await?;
            parse_answer(&raw)
        };
        tokio::time::timeout(self.spec.http_timeout, exchange)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
    }

    fn dir(&self) -> &Path {
        // `dir` is only taken in `drop`, which runs last.
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), TempDir::path)
    }

    fn spawn(&mut self, configure: &impl Fn(&mut Command, u16, &Path)) -> Result<(), Error> {
        let name = self.spec.name;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| Error::startup_io(format!("opening {name}'s log file"), e))?;
        let stdout = log
            .try_clone()
            .map_err(|e| Error::startup_io(format!("opening {name}'s log file"), e))?;
        let mut command = Command::new(&self.program);
        configure(&mut command, self.port, self.dir());
        let child = command
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| Error::startup_io(format!("starting {}", self.program.display()), e))?;
        tracing::debug!(
            pid = child.id(),
            port = self.port,
            "{} started",
            self.spec.command
        );
        self.child = Some(child);
        Ok(())
    }

    async fn spawn_and_wait(
        &mut self,
        configure: &impl Fn(&mut Command, u16, &Path),
    ) -> Result<(), NotReady> {
        self.spawn(configure).map_err(NotReady::Failed)?;
        let spec = self.spec;
        let deadline = Instant::now() + spec.ready_timeout;
        loop {
            if let Some(status) = self.reap() {
                return Err(NotReady::Exited(status));
            }
            let last = match self.http("GET", spec.health_path, &[], "").await {
                Ok((200, _)) => return Ok(()),
                Ok((status, _)) => format!("HTTP {status}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                let message = format!(
                    "{} on port {} did not answer GET {} with 200 within {}s (last: {last}); its \
                     output:\n{}",
                    spec.name,
                    self.port,
                    spec.health_path,
                    spec.ready_timeout.as_secs(),
                    self.log_tail()
                );
                self.stop();
                return Err(NotReady::Failed(Error::startup(message)));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Whether the process has exited; reaps it if so.
    fn reap(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }
}

impl Drop for Daemon {
    /// Kills the server, reaps it and removes its directory. Never panics.
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// An HTTP answer read to its end: the status and the body.
fn parse_answer(raw: &[u8]) -> std::io::Result<(u16, String)> {
    let invalid = |message| std::io::Error::new(std::io::ErrorKind::InvalidData, message);
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no HTTP head in the answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid("no HTTP status in the answer"))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_split_into_status_and_body() {
        let (status, body) =
            parse_answer(b"HTTP/1.1 503 Service Unavailable\r\nA: b\r\n\r\n{}").unwrap();
        assert_eq!((status, body.as_str()), (503, "{}"));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_answer(b"garbage\r\n\r\n").is_err());
    }
}
