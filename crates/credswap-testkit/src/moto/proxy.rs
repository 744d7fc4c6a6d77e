//! [`FaultProxy`]: an HTTP/1.1 proxy in front of a [`TestMoto`](super::TestMoto) (or a
//! [`TestBao`](crate::TestBao)) that throttles, fails or refuses on demand, in the words of the
//! store behind it ([`Dialect`]).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Error;

use super::TestMoto;
use super::http::*;

/// What the [`FaultProxy`] does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The store's "slow down". [`Dialect::Aws`]: HTTP 400 with `x-amzn-errortype:
    /// ThrottlingException` and the body
    /// `{"__type":"ThrottlingException","message":"Rate exceeded"}`, as AWS does when a caller
    /// exceeds its request rate. [`Dialect::Vault`]: HTTP 429 with the body
    /// `{"errors":["rate limit quota exceeded"]}`, as Vault and OpenBao do when a rate limit
    /// quota is exceeded.
    Throttle,
    /// The store's internal error. [`Dialect::Aws`]: HTTP 500 with `x-amzn-errortype:
    /// InternalServiceError`; [`Dialect::Vault`]: HTTP 500 with Vault's `{"errors":[...]}`.
    InternalError,
}

/// Whose words the [`FaultProxy`] answers its injected faults in: the store it stands in front
/// of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dialect {
    /// AWS JSON 1.1 errors (`__type`, `x-amzn-errortype`), as Secrets Manager (moto) answers.
    #[default]
    Aws,
    /// Vault's and OpenBao's `{"errors": [...]}` with the HTTP status saying what it is.
    Vault,
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
pub(super) enum Plan {
    Forward,
    Inject {
        fault: Fault,
        remaining: Option<u64>,
    },
    Outage,
}

impl Plan {
    /// `fault` for the next `n` requests (none for 0).
    fn next(fault: Fault, n: u64) -> Self {
        if n == 0 {
            Plan::Forward
        } else {
            Plan::Inject {
                fault,
                remaining: Some(n),
            }
        }
    }
}

pub(super) struct ProxyShared {
    /// How the injected faults are worded.
    pub(super) dialect: Dialect,
    pub(super) plan: Mutex<Plan>,
    pub(super) outage: watch::Sender<bool>,
    pub(super) forwarded: AtomicU64,
    pub(super) throttled: AtomicU64,
    pub(super) internal_errors: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) connections: AtomicU64,
    /// Whether the accept loop holds a listening socket.
    pub(super) listening: watch::Sender<bool>,
    /// [`FaultProxy::throttle`]: the fraction of requests (that no other fault takes) answered
    /// with [`Fault::Throttle`], as `f64` bits.
    pub(super) throttle_fraction: AtomicU64,
    /// [`FaultProxy::latency`]: how long each answer waits, in microseconds.
    pub(super) latency_us: AtomicU64,
    /// [`FaultProxy::inject_after`]: requests forwarded before the plan applies.
    pub(super) forward_first: AtomicU64,
}

impl ProxyShared {
    pub(super) fn set(&self, plan: Plan) {
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = plan;
        self.outage.send_replace(plan == Plan::Outage);
    }

    /// What to do with one request; counts down an injected fault. A request the plan forwards
    /// is throttled with the probability [`FaultProxy::throttle`] set.
    pub(super) fn next(&self) -> Plan {
        let plan = self.planned();
        if plan == Plan::Forward && self.throttles(rand::random::<f64>()) {
            return Plan::Inject {
                fault: Fault::Throttle,
                remaining: None,
            };
        }
        plan
    }

    /// Whether a request whose random draw in `[0, 1)` is `draw` is throttled by the fraction
    /// set with [`FaultProxy::throttle`].
    pub(super) fn throttles(&self, draw: f64) -> bool {
        draw < f64::from_bits(self.throttle_fraction.load(Ordering::Relaxed))
    }

    pub(super) fn set_throttle(&self, fraction: f64) {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self.throttle_fraction
            .store(fraction.to_bits(), Ordering::Relaxed);
    }

    pub(super) fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::Relaxed))
    }

    /// The plan for one request; counts down an injected fault.
    fn planned(&self) -> Plan {
        if self
            .forward_first
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Plan::Forward;
        }
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
/// of a real AWS endpoint: throttling, internal errors, and an outage. Started with
/// [`start_with`](Self::start_with)`(upstream, Dialect::Vault)` (as
/// [`TestBao::faulty`](crate::TestBao::faulty) does) it words them as Vault does instead.
///
/// It forwards each request to the upstream with `Connection: close`, reads the whole answer and
/// writes it back, keeping the client's connection alive (the AWS SDK reuses connections).
/// Request bodies must carry `Content-Length` (chunked request bodies are answered with 411).
///
/// - [`inject_next`](Self::inject_next)`(fault, n)`: the next `n` requests get `fault`;
/// - [`inject_until_heal`](Self::inject_until_heal)`(fault)`: every request gets it;
/// - [`inject_after`](Self::inject_after)`(m, fault, n)`: the next `m` requests are forwarded,
///   the `n` after them get `fault`;
/// - [`throttle`](Self::throttle)`(p)`: a random fraction `p` of the requests is throttled;
/// - [`latency`](Self::latency)`(d)`: every answer waits `d`;
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
    /// Starts a proxy on `127.0.0.1` and a free port, forwarding to `upstream`; its faults are
    /// AWS's ([`Dialect::Aws`]).
    pub async fn start(upstream: SocketAddr) -> Result<Self, Error> {
        Self::start_with(upstream, Dialect::Aws).await
    }

    /// Starts a proxy on `127.0.0.1` and a free port, forwarding to `upstream`, its faults worded
    /// in `dialect`.
    pub async fn start_with(upstream: SocketAddr, dialect: Dialect) -> Result<Self, Error> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| Error::startup_io("binding the fault proxy's port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::startup_io("reading the fault proxy's port", e))?
            .port();
        let (outage, outage_rx) = watch::channel(false);
        let shared = Arc::new(ProxyShared {
            dialect,
            plan: Mutex::new(Plan::Forward),
            outage,
            forwarded: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            internal_errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            listening: watch::channel(true).0,
            throttle_fraction: AtomicU64::new(0f64.to_bits()),
            latency_us: AtomicU64::new(0),
            forward_first: AtomicU64::new(0),
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

    /// How its injected faults are worded.
    pub fn dialect(&self) -> Dialect {
        self.shared.dialect
    }

    /// Answers the next `n` requests with `fault`, then forwards again.
    pub fn inject_next(&self, fault: Fault, n: u64) {
        self.shared.forward_first.store(0, Ordering::Relaxed);
        self.shared.set(Plan::next(fault, n));
    }

    /// Forwards the next `forwarded` requests, then answers `n` with `fault`: the second call
    /// of a two-call read (`DescribeSecret`, then `GetSecretValue`) fails while the first
    /// succeeds.
    pub fn inject_after(&self, forwarded: u64, fault: Fault, n: u64) {
        // The count first: a request between the two stores is forwarded, not faulted.
        self.shared
            .forward_first
            .store(forwarded, Ordering::Relaxed);
        self.shared.set(Plan::next(fault, n));
    }

    /// Answers a random `fraction` of the requests (0 to 1; each request independently) with
    /// [`Fault::Throttle`], as a store over its request quota does to part of a fleet's calls,
    /// and forwards the rest; `0.0` stops it. Applies to requests that
    /// [`inject_next`](Self::inject_next), [`inject_until_heal`](Self::inject_until_heal) and
    /// [`outage`](Self::outage) leave to be forwarded, and lasts until changed ([`heal`](Self::heal)
    /// does not change it). Counted in [`FaultStats::throttled`].
    pub fn throttle(&self, fraction: f64) {
        self.shared.set_throttle(fraction);
    }

    /// Makes every answer (forwarded or injected) wait `latency` first, as a slow or distant
    /// store does; `Duration::ZERO` stops it. Lasts until changed.
    pub fn latency(&self, latency: Duration) {
        self.shared.latency_us.store(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Answers every request with `fault` until [`heal`](Self::heal).
    pub fn inject_until_heal(&self, fault: Fault) {
        self.shared.forward_first.store(0, Ordering::Relaxed);
        self.shared.set(Plan::Inject {
            fault,
            remaining: None,
        });
    }

    /// Refuses new connections and closes kept-alive ones at their next request, until
    /// [`heal`](Self::heal). Returns once the listening socket is closed.
    pub async fn outage(&self) {
        self.shared.forward_first.store(0, Ordering::Relaxed);
        self.shared.set(Plan::Outage);
        self.wait_listening(false).await;
    }

    /// Forwards every request again. After an [`outage`](Self::outage), returns once the proxy
    /// listens again on the same port.
    pub async fn heal(&self) {
        self.shared.forward_first.store(0, Ordering::Relaxed);
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
            .field("dialect", &self.shared.dialect)
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
pub(super) async fn accept_loop(
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
pub(super) async fn serve(mut client: TcpStream, upstream: SocketAddr, shared: Arc<ProxyShared>) {
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
        let latency = shared.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
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

pub(super) fn fault_response(fault: Fault, shared: &ProxyShared) -> Vec<u8> {
    match fault {
        Fault::Throttle => shared.throttled.fetch_add(1, Ordering::SeqCst),
        Fault::InternalError => shared.internal_errors.fetch_add(1, Ordering::SeqCst),
    };
    match shared.dialect {
        Dialect::Aws => aws_fault(fault),
        Dialect::Vault => vault_fault(fault),
    }
}

/// `fault` as AWS answers it (AWS JSON 1.1).
fn aws_fault(fault: Fault) -> Vec<u8> {
    let (status, reason, kind, message) = match fault {
        Fault::Throttle => (400, "Bad Request", "ThrottlingException", "Rate exceeded"),
        Fault::InternalError => (
            500,
            "Internal Server Error",
            "InternalServiceError",
            "An error occurred on the server side (injected by the fault proxy)",
        ),
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

/// `fault` as Vault and OpenBao answer it: the status, and `{"errors": [...]}`.
fn vault_fault(fault: Fault) -> Vec<u8> {
    let (status, reason, message) = match fault {
        Fault::Throttle => (429, "Too Many Requests", "rate limit quota exceeded"),
        Fault::InternalError => (
            500,
            "Internal Server Error",
            "internal error (injected by the fault proxy)",
        ),
    };
    let body = format!(r#"{{"errors":["{message}"]}}"#);
    simple_response(
        status,
        reason,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}
