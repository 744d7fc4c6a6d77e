//! [`TestMoto`]: a real `moto_server` (the AWS mock) on a free loopback port, and
//! [`FaultProxy`]: an HTTP proxy in front of it that throttles, fails or refuses on demand.
//!
//! Both speak plain HTTP/1.1 over Tokio TCP; the test kit has no AWS SDK dependency.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Error;
use crate::daemon::{Daemon, DaemonSpec};
use crate::process::Binary;

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
/// The largest request or response head the proxy accepts.
const MAX_HEAD: usize = 64 * 1024;

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

/// What the [`FaultProxy`] does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer HTTP 400 with `x-amzn-errortype: ThrottlingException` and the body
    /// `{"__type":"ThrottlingException","message":"Rate exceeded"}`, as AWS does when a caller
    /// exceeds its request rate.
    Throttle,
    /// Answer HTTP 500 with `x-amzn-errortype: InternalServiceError`.
    InternalError,
}

/// What the proxy has done, for assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultStats {
    /// Requests passed to the upstream server (and answered by it).
    pub forwarded: u64,
    /// Requests answered with [`Fault::Throttle`].
    pub throttled: u64,
    /// Requests answered with [`Fault::InternalError`].
    pub internal_errors: u64,
    /// Requests dropped without an answer because an outage began.
    pub dropped: u64,
    /// Client connections accepted (fewer than requests when clients keep connections alive).
    pub connections: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Forward,
    Inject {
        fault: Fault,
        remaining: Option<u64>,
    },
    Outage,
}

struct ProxyShared {
    plan: Mutex<Plan>,
    outage: watch::Sender<bool>,
    forwarded: AtomicU64,
    throttled: AtomicU64,
    internal_errors: AtomicU64,
    dropped: AtomicU64,
    connections: AtomicU64,
    /// Whether the accept loop holds a listening socket.
    listening: watch::Sender<bool>,
}

impl ProxyShared {
    fn set(&self, plan: Plan) {
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = plan;
        self.outage.send_replace(plan == Plan::Outage);
    }

    /// What to do with one request; counts down an injected fault.
    fn next(&self) -> Plan {
        let mut plan = self.plan.lock().unwrap_or_else(|p| p.into_inner());
        let now = *plan;
        if let Plan::Inject {
            fault,
            remaining: Some(n),
        } = now
        {
            *plan = if n <= 1 {
                Plan::Forward
            } else {
                Plan::Inject {
                    fault,
                    remaining: Some(n - 1),
                }
            };
        }
        now
    }
}

/// An HTTP/1.1 proxy in front of a [`TestMoto`] (or any HTTP server) that injects the failures
/// of a real AWS endpoint: throttling, internal errors, and an outage.
///
/// It forwards each request to the upstream with `Connection: close`, reads the whole answer and
/// writes it back, keeping the client's connection alive (the AWS SDK reuses connections).
/// Request bodies must carry `Content-Length` (chunked request bodies are answered with 411).
///
/// - [`inject_next`](Self::inject_next)`(fault, n)`: the next `n` requests get `fault`;
/// - [`inject_until_heal`](Self::inject_until_heal)`(fault)`: every request gets it;
/// - [`outage`](Self::outage)`.await`: the listening socket closes (new connections are
///   refused) and kept-alive connections are closed at their next request;
/// - [`heal`](Self::heal)`.await`: forward everything again (listening again on the same port).
///
/// Dropping the value stops it and closes every connection.
pub struct FaultProxy {
    port: u16,
    upstream: SocketAddr,
    shared: Arc<ProxyShared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1` and a free port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| Error::startup_io("binding the fault proxy's port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::startup_io("reading the fault proxy's port", e))?
            .port();
        let (outage, outage_rx) = watch::channel(false);
        let shared = Arc::new(ProxyShared {
            plan: Mutex::new(Plan::Forward),
            outage,
            forwarded: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            internal_errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            listening: watch::channel(true).0,
        });
        let task = tokio::spawn(accept_loop(
            listener,
            port,
            upstream,
            shared.clone(),
            outage_rx,
        ));
        Ok(Self {
            port,
            upstream,
            shared,
            task,
        })
    }

    /// `http://127.0.0.1:<port>`: the endpoint URL for an AWS SDK client.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}:{}", TestMoto::HOST, self.port)
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answers the next `n` requests with `fault`, then forwards again.
    pub fn inject_next(&self, fault: Fault, n: u64) {
        self.shared.set(if n == 0 {
            Plan::Forward
        } else {
            Plan::Inject {
                fault,
                remaining: Some(n),
            }
        });
    }

    /// Answers every request with `fault` until [`heal`](Self::heal).
    pub fn inject_until_heal(&self, fault: Fault) {
        self.shared.set(Plan::Inject {
            fault,
            remaining: None,
        });
    }

    /// Refuses new connections and closes kept-alive ones at their next request, until
    /// [`heal`](Self::heal). Returns once the listening socket is closed.
    pub async fn outage(&self) {
        self.shared.set(Plan::Outage);
        self.wait_listening(false).await;
    }

    /// Forwards every request again. After an [`outage`](Self::outage), returns once the proxy
    /// listens again on the same port.
    pub async fn heal(&self) {
        self.shared.set(Plan::Forward);
        self.wait_listening(true).await;
    }

    async fn wait_listening(&self, listening: bool) {
        let mut rx = self.shared.listening.subscribe();
        let wait = rx.wait_for(|l| *l == listening);
        if tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .is_err()
        {
            tracing::warn!(
                port = self.port,
                listening,
                "fault proxy: listening state not reached in 5 s"
            );
        }
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> FaultStats {
        FaultStats {
            forwarded: self.shared.forwarded.load(Ordering::SeqCst),
            throttled: self.shared.throttled.load(Ordering::SeqCst),
            internal_errors: self.shared.internal_errors.load(Ordering::SeqCst),
            dropped: self.shared.dropped.load(Ordering::SeqCst),
            connections: self.shared.connections.load(Ordering::SeqCst),
        }
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plan = *self.shared.plan.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("FaultProxy")
            .field("endpoint_url", &self.endpoint_url())
            .field("upstream", &self.upstream)
            .field("plan", &plan)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for FaultProxy {
    /// Stops accepting and closes every connection (they live in the accept task).
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections, serving each in a task of its own; closes the listener during an
/// outage and binds the same port again after it. Dropping the task ends every connection.
async fn accept_loop(
    listener: TcpListener,
    port: u16,
    upstream: SocketAddr,
    shared: Arc<ProxyShared>,
    mut outage: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut listener = Some(listener);
    loop {
        while connections.try_join_next().is_some() {}
        match &listener {
            Some(l) => {
                tokio::select! {
                    accepted = l.accept() => match accepted {
                        Ok((stream, _)) => {
                            shared.connections.fetch_add(1, Ordering::SeqCst);
                            connections.spawn(serve(stream, upstream, shared.clone()));
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "fault proxy: accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    },
                    changed = outage.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if *outage.borrow_and_update() {
                            listener = None;
                            shared.listening.send_replace(false);
                        }
                    }
                }
            }
            None => {
                if outage.changed().await.is_err() {
                    return;
                }
                if !*outage.borrow_and_update() {
                    // tokio sets SO_REUSEADDR, so the port is free again at once.
                    let mut delay = Duration::from_millis(10);
                    loop {
                        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
                            Ok(l) => {
                                listener = Some(l);
                                shared.listening.send_replace(true);
                                break;
                            }
                            Err(e) if delay > Duration::from_secs(2) => {
                                tracing::warn!(port, error = %e, "fault proxy cannot listen again");
                                return;
                            }
                            Err(_) => {
                                tokio::time::sleep(delay).await;
                                delay *= 2;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Serves one client connection: request after request until the client closes, asks to
/// close, or an outage begins.
async fn serve(mut client: TcpStream, upstream: SocketAddr, shared: Arc<ProxyShared>) {
    let mut buffer = Vec::new();
    loop {
        let request = match read_request(&mut client, &mut buffer).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "fault proxy: bad request");
                let _ = client
                    .write_all(&simple_response(400, "Bad Request", &[], b""))
                    .await;
                return;
            }
        };
        let keep_alive = request.keep_alive();
        let answer = match shared.next() {
            Plan::Outage => {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Plan::Inject { fault, .. } => fault_response(fault, &shared),
            Plan::Forward if request.chunked => simple_response(
                411,
                "Length Required",
                &[],
                b"the fault proxy needs Content-Length",
            ),
            Plan::Forward => match forward(&request, upstream).await {
                Ok(response) => {
                    shared.forwarded.fetch_add(1, Ordering::SeqCst);
                    response.for_client(keep_alive)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "fault proxy: upstream failed");
                    // The upstream is down: so is the proxy, to the client.
                    return;
                }
            },
        };
        if client.write_all(&answer).await.is_err() || !keep_alive {
            return;
        }
    }
}

fn fault_response(fault: Fault, shared: &ProxyShared) -> Vec<u8> {
    let (status, reason, kind, message) = match fault {
        Fault::Throttle => {
            shared.throttled.fetch_add(1, Ordering::SeqCst);
            (400, "Bad Request", "ThrottlingException", "Rate exceeded")
        }
        Fault::InternalError => {
            shared.internal_errors.fetch_add(1, Ordering::SeqCst);
            (
                500,
                "Internal Server Error",
                "InternalServiceError",
                "An error occurred on the server side (injected by the fault proxy)",
            )
        }
    };
    let body = format!(r#"{{"__type":"{kind}","message":"{message}"}}"#);
    simple_response(
        status,
        reason,
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("x-amzn-errortype", kind),
            ("x-amzn-requestid", "00000000-0000-0000-0000-000000000000"),
        ],
        body.as_bytes(),
    )
}

fn simple_response(status: u16, reason: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// One parsed request: its head's lines and its body.
struct Request {
    /// `METHOD target VERSION`.
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 closes unless `keep-alive`.
    fn keep_alive(&self) -> bool {
        let connection = self.header("connection").map(str::to_ascii_lowercase);
        if self.line.ends_with("HTTP/1.0") {
            connection.is_some_and(|c| c.contains("keep-alive"))
        } else {
            !connection.is_some_and(|c| c.contains("close"))
        }
    }

    /// The request as sent upstream: hop-by-hop headers replaced by `Connection: close`.
    fn upstream_bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.line);
        for (name, value) in &self.headers {
            if !is_hop_by_hop(name) {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Splits `raw` at the end of the head (`\r\n\r\n`): the head's lines and the offset of the body.
fn split_head(raw: &[u8]) -> Option<(Vec<String>, usize)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    Some((head.split("\r\n").map(str::to_owned).collect(), end + 4))
}

fn parse_headers(lines: &[String]) -> std::io::Result<Vec<(String, String)>> {
    lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| invalid("a header line without ':'"))
        })
        .collect()
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_owned())
}

/// Reads one request from `stream`; `buffer` keeps bytes of the next one (pipelining). `None`
/// when the client closed the connection between requests.
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let (lines, body_start) = loop {
        if let Some(found) = split_head(buffer) {
            break found;
        }
        if buffer.len() > MAX_HEAD {
            return Err(invalid("request head too large"));
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err(invalid("connection closed inside a request head"))
            };
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let line = lines.first().cloned().unwrap_or_default();
    let headers = parse_headers(&lines[1..])?;
    let chunked = header(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length: usize = match header(&headers, "content-length") {
        Some(v) => v.parse().map_err(|_| invalid("bad Content-Length"))?,
        None => 0,
    };
    buffer.drain(..body_start);
    if chunked {
        // Answered with 411; the connection cannot be reused after an unread chunked body.
        buffer.clear();
    }
    while buffer.len() < length {
        let mut chunk = vec![0u8; (length - buffer.len()).min(64 * 1024)];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(invalid("connection closed inside a request body"));
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = buffer.drain(..length).collect();
    let mut request = Request {
        line,
        headers,
        body,
        chunked,
    };
    if chunked {
        request
            .headers
            .push(("Connection".to_owned(), "close".to_owned()));
    }
    Ok(Some(request))
}

/// A whole upstream response.
struct Response {
    /// `VERSION status reason`, with a numeric status.
    status_line: String,
    headers: Vec<(String, String)>,
    /// The body bytes as received (still chunk-encoded when the upstream chunked them).
    body: Vec<u8>,
}

impl Response {
    fn parse(raw: Vec<u8>) -> std::io::Result<Self> {
        let (lines, body_start) =
            split_head(&raw).ok_or_else(|| invalid("no complete response head"))?;
        let status_line = lines.first().cloned().unwrap_or_default();
        if status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .is_none()
        {
            return Err(invalid("no status code"));
        }
        let headers = parse_headers(&lines[1..])?;
        Ok(Self {
            status_line,
            headers,
            body: raw[body_start..].to_vec(),
        })
    }

    /// The response for the client: the upstream's framing kept (or `Content-Length` added when
    /// the upstream framed by closing), `Connection` set for the client's connection.
    fn for_client(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.status_line);
        let framed = header(&self.headers, "content-length").is_some()
            || header(&self.headers, "transfer-encoding").is_some();
        for (name, value) in &self.headers {
            if !is_hop_by_hop(name) {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        if !framed {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        out.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Sends `request` upstream with `Connection: close` and reads the whole answer.
async fn forward(request: &Request, upstream: SocketAddr) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(upstream).await?;
    stream.write_all(&request.upstream_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    Response::parse(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_moto_message_says_how_to_get_it() {
        let e = MOTO.binary.not_found();
        assert!(e.is_missing_binaries());
        let text = e.to_string();
        for needle in [
            "moto_server",
            "PATH",
            "pip install 'moto[server]'",
            MOTO_SERVER_ENV,
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
        assert_eq!(MOTO.binary.find_on_path(None), None);
    }

    #[test]
    fn injected_faults_count_down() {
        let (outage, _rx) = watch::channel(false);
        let shared = ProxyShared {
            plan: Mutex::new(Plan::Forward),
            outage,
            forwarded: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            internal_errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            listening: watch::channel(true).0,
        };
        shared.set(Plan::Inject {
            fault: Fault::Throttle,
            remaining: Some(2),
        });
        assert!(matches!(shared.next(), Plan::Inject { .. }));
        assert!(matches!(shared.next(), Plan::Inject { .. }));
        assert_eq!(shared.next(), Plan::Forward);
        let text = String::from_utf8(fault_response(Fault::Throttle, &shared)).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert!(text.contains("x-amzn-errortype: ThrottlingException\r\n"));
        assert!(text.ends_with(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#));
    }

    #[test]
    fn responses_framed_by_close_get_a_length() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-A: b\r\n\r\nhello".to_vec();
        let response = Response::parse(raw).unwrap();
        assert_eq!(response.status_line, "HTTP/1.1 200 OK");
        let text = String::from_utf8(response.for_client(true)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
        );
    }

    /// Sends `count` GETs of `path` on one connection; returns each answer's status and body.
    async fn keep_alive_gets(
        addr: SocketAddr,
        path: &str,
        count: usize,
    ) -> std::io::Result<Vec<(u16, String)>> {
        let mut stream = TcpStream::connect(addr).await?;
        let mut answers = Vec::new();
        let mut pending = Vec::new();
        for _ in 0..count {
            let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            // Read one response framed by Content-Length.
            loop {
                if let Some((lines, start)) = split_head(&pending) {
                    let headers = parse_headers(&lines[1..])?;
                    let length: usize = header(&headers, "content-length")
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| invalid("no Content-Length"))?;
                    if pending.len() >= start + length {
                        let status = lines[0].split(' ').nth(1).unwrap().parse().unwrap();
                        let body = String::from_utf8_lossy(&pending[start..start + length]);
                        answers.push((status, body.into_owned()));
                        pending.drain(..start + length);
                        break;
                    }
                }
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(invalid("closed"));
                }
                pending.extend_from_slice(&chunk[..n]);
            }
        }
        Ok(answers)
    }

    /// Needs `moto_server` (`pip install 'moto[server]'`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn moto_starts_resets_restarts_and_the_proxy_injects_faults() {
        let mut moto = TestMoto::start().await.unwrap();
        assert!(moto.endpoint_url().starts_with("http://127.0.0.1:"));
        assert_eq!(
            (
                moto.region(),
                moto.access_key_id(),
                moto.secret_access_key()
            ),
            ("us-east-1", "testing", "testing")
        );
        moto.reset().await.unwrap();

        let proxy = moto.faulty().await.unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, proxy.port()));
        let first = keep_alive_gets(addr, "/moto-api/data.json", 1)
            .await
            .unwrap();
        assert_eq!(first[0].0, 200);
        let before = proxy.stats();
        // Three requests on one kept-alive connection, one of them answered with a 500.
        proxy.inject_next(Fault::InternalError, 1);
        let stream_answers = keep_alive_gets(addr, "/moto-api/data.json", 3)
            .await
            .unwrap();
        let statuses: Vec<u16> = stream_answers.iter().map(|a| a.0).collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 500).count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            2,
            "{statuses:?}"
        );
        let after = proxy.stats();
        assert_eq!(
            after.connections - before.connections,
            1,
            "one connection, three requests"
        );
        assert_eq!(after.internal_errors, 1);

        proxy.inject_until_heal(Fault::Throttle);
        let throttled = keep_alive_gets(addr, "/moto-api/data.json", 2)
            .await
            .unwrap();
        for (status, body) in &throttled {
            assert_eq!(*status, 400);
            assert_eq!(
                body,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#
            );
        }
        proxy.outage().await;
        let refused = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        proxy.heal().await;
        let healed = keep_alive_gets(addr, "/moto-api/data.json", 1).await;
        assert_eq!(healed.unwrap()[0].0, 200);

        moto.stop();
        assert!(moto.pid().is_none());
        assert!(moto.reset().await.is_err());
        moto.restart().await.unwrap();
        moto.reset().await.unwrap();
        assert!(format!("{moto:?} {proxy:?}").contains("endpoint_url"));
    }
}
