//! TLS for tests: a throwaway certificate authority ([`TestCa`]), the certificates of a cluster
//! started with [`TestPostgres::start_tls`] ([`ClusterTls`]), rustls client configs that trust
//! them ([`client_config`]), what `pg_stat_ssl` says of the sessions
//! ([`TestPostgres::session_encryption`]), the rotation scenario run on such a cluster with
//! every session's encryption watched from the server side ([`run_encrypted`]) and what every
//! adapter's run must show ([`assert_encrypted_run`]), and the checks of a handshake the client
//! refuses ([`wrong_name_config`], [`assert_refused_at_once`]).
//!
//! ```no_run
//! use credswap_testkit::TestPostgres;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pg = TestPostgres::start_tls().await?;
//! let tls = pg.tls().expect("started with TLS");
//! // tokio-postgres-rustls: MakeRustlsConnect::new(tls.client_config())
//! // sqlx: .ssl_mode(PgSslMode::VerifyFull).ssl_root_cert_from_pem(tls.ca_cert_pem().into())
//! let config = pg.tls_base_config(); // host `localhost`, hostaddr 127.0.0.1, sslmode=require
//! # let _ = (tls, config);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use credswap_core::contract::AdapterStats;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use tokio::sync::{Mutex, MutexGuard};

use crate::cluster::{Cluster, LOOPBACK};
use crate::scenario::{self, Progress, RotationSetup, ScenarioConfig, ScenarioReport, Workload};
use crate::{Error, TestPostgres};

/// The name the server certificate of a TLS cluster is issued for (besides `127.0.0.1`).
pub const SERVER_NAME: &str = "localhost";

/// A host name the server certificate is not for; [`wrong_name_config`] connects under it.
pub const WRONG_NAME: &str = "db.wrong.invalid";

/// How soon a connect the TLS handshake refuses must fail: at once, not after retries or a
/// pool's timeout.
const REFUSED_WITHIN: Duration = Duration::from_secs(3);

/// A request that says whether the session it runs on is encrypted: `current_user` and
/// `pg_stat_ssl.ssl` of the session's own backend.
pub const SESSION_SSL_QUERY: &str =
    "SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// A certificate authority made for one test run: a self-signed CA certificate (ECDSA P-256)
/// whose key stays in memory. [`TestPostgres::start_tls`] makes one per cluster; a test makes
/// another to show that a client trusting the wrong CA is refused.
pub struct TestCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA with `common_name` as its subject.
    ///
    /// # Errors
    ///
    /// [`Error::is_startup`] when the key or the certificate cannot be made.
    pub fn generate(common_name: &str) -> Result<TestCa, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(cert_error)?;
        let cert = params.self_signed(&key).map_err(cert_error)?;
        Ok(TestCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A rustls client config that trusts this CA only ([`client_config`]).
    ///
    /// # Panics
    ///
    /// As [`client_config`].
    pub fn client_config(&self) -> rustls::ClientConfig {
        client_config([self.cert_der.clone()])
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by this CA, and its
    /// key (PKCS#8): `(certificate PEM, key PEM)`.
    ///
    /// # Errors
    ///
    /// [`Error::is_startup`] when a name is invalid or signing fails.
    pub fn issue_server_cert(&self, names: &[&str]) -> Result<(String, String), Error> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(cert_error)?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(cert_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_error)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

fn cert_error(e: rcgen::Error) -> Error {
    Error::startup(format!("making a test certificate failed: {e}"))
}

/// A rustls client config (aws-lc-rs provider, TLS 1.2 and 1.3) whose only roots are `roots`:
/// it verifies the server's chain and its name, as `sslmode=verify-full` does.
///
/// # Panics
///
/// When a root is not a valid certificate.
pub fn client_config(
    roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root).expect("a valid CA certificate");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the aws-lc-rs provider supports the default protocol versions")
    .with_root_certificates(store)
    .with_no_client_auth()
}

/// The certificates of a cluster started with [`TestPostgres::start_tls`]: its CA (to trust)
/// and the name its server certificate carries. The files live in the cluster's temp dir and
/// are removed with it.
#[derive(Clone)]
pub struct ClusterTls {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    ca_path: PathBuf,
}

impl ClusterTls {
    /// Makes a CA and a server certificate for [`SERVER_NAME`] and the loopback address, and
    /// turns TLS on in `cluster` (not started yet). Blocking.
    pub(crate) fn install(cluster: &Cluster) -> Result<ClusterTls, Error> {
        let ca = TestCa::generate("credswap-testkit CA")?;
        let (cert, key) = ca.issue_server_cert(&[SERVER_NAME, LOOPBACK])?;
        let ca_path = cluster.enable_tls(&cert, &key, ca.cert_pem())?;
        Ok(ClusterTls {
            ca_pem: ca.cert_pem,
            ca_der: ca.cert_der,
            ca_path,
        })
    }

    /// The CA certificate, PEM (sqlx: `ssl_root_cert_from_pem`).
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER (a rustls `RootCertStore`).
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The CA certificate's PEM file (`sslrootcert`, sqlx's `ssl_root_cert`).
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca_path
    }

    /// The DNS name of the server certificate: [`SERVER_NAME`]. It is also valid for
    /// `127.0.0.1`.
    pub fn server_name(&self) -> &str {
        SERVER_NAME
    }

    /// A rustls client config that trusts this cluster's CA only ([`client_config`]).
    pub fn client_config(&self) -> rustls::ClientConfig {
        client_config([self.ca_der.clone()])
    }
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls")
            .field("ca_path", &self.ca_path)
            .field("server_name", &SERVER_NAME)
            .finish()
    }
}

/// How many sessions of some roles are encrypted, by `pg_stat_ssl`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionEncryption {
    /// Sessions with `pg_stat_ssl.ssl = true`.
    pub encrypted: usize,
    /// Sessions with `pg_stat_ssl.ssl = false`.
    pub unencrypted: usize,
}

const SESSION_ENCRYPTION_SQL: &str = "SELECT count(*) FILTER (WHERE s.ssl), \
     count(*) FILTER (WHERE NOT s.ssl) \
     FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid \
     WHERE a.usename = ANY($1)";

async fn session_encryption(
    client: &tokio_postgres::Client,
    roles: &[&str],
) -> Result<SessionEncryption, Error> {
    let row = client
        .query_one(SESSION_ENCRYPTION_SQL, &[&roles])
        .await
        .map_err(|e| Error::query("reading pg_stat_ssl", e))?;
    let count = |i: usize| usize::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    Ok(SessionEncryption {
        encrypted: count(0),
        unencrypted: count(1),
    })
}

impl TestPostgres {
    /// How many sessions of `roles` are encrypted and how many are not, from the server's side
    /// (`pg_stat_activity` joined with `pg_stat_ssl`).
    ///
    /// # Errors
    ///
    /// [`Error::is_query`].
    pub async fn session_encryption(&self, roles: &[&str]) -> Result<SessionEncryption, Error> {
        session_encryption(&self.admin().await?, roles).await
    }
}

/// A TLS cluster ([`TestPostgres::start_tls`]) and its turn: the tests of one binary that take
/// one with [`postgres`] run one at a time (their load would otherwise measure the machine).
/// Derefs to [`TestPostgres`].
#[derive(Debug)]
pub struct TlsServer {
    server: TestPostgres,
    _turn: MutexGuard<'static, ()>,
}

impl Deref for TlsServer {
    type Target = TestPostgres;

    fn deref(&self) -> &TestPostgres {
        &self.server
    }
}

static TURN: Mutex<()> = Mutex::const_new(());

/// Starts a TLS cluster once the previous test of this binary that took one is done.
///
/// # Panics
///
/// When the cluster cannot be started, with the error that says why (never a silent skip).
pub async fn postgres() -> TlsServer {
    let turn = TURN.lock().await;
    match TestPostgres::start_tls().await {
        Ok(server) => TlsServer {
            server,
            _turn: turn,
        },
        Err(e) => panic!("these tests need a PostgreSQL server with TLS: {e}"),
    }
}

/// The TLS scenario: a few seconds of load (4 s, 8 workers, a pool of 4) with a rotation every
/// second, enough for three or four rotations while keeping each test short.
pub fn scenario_config() -> ScenarioConfig {
    ScenarioConfig {
        duration: Duration::from_secs(4),
        rotate_every: Some(Duration::from_secs(1)),
        concurrency: 8,
        pool_max_size: 4,
        ..ScenarioConfig::default()
    }
}

/// What a scenario on a TLS cluster showed: the scenario's report, and what `pg_stat_ssl` said
/// of the application's sessions, sampled every 20 ms from the server's side.
#[derive(Debug, Clone)]
pub struct EncryptedRun {
    /// The scenario's report.
    pub report: ScenarioReport,
    /// The most encrypted sessions of the application's roles seen at once.
    pub peak_encrypted: usize,
    /// Unencrypted sessions of the application's roles, summed over the samples (0 when every
    /// session was encrypted).
    pub unencrypted_seen: usize,
    /// Samples taken.
    pub samples: usize,
}

impl EncryptedRun {
    /// The report's summary and the encryption seen, for failure messages.
    pub fn summary(&self) -> String {
        format!(
            "{}; pg_stat_ssl over {} samples: peak {} encrypted, {} unencrypted",
            self.report.summary(),
            self.samples,
            self.peak_encrypted,
            self.unencrypted_seen
        )
    }
}

/// [`scenario::run`] with a watcher beside it that reads `pg_stat_ssl` for the sessions of
/// `setup`'s roles every 20 ms until the scenario ends.
///
/// # Errors
///
/// Those of [`scenario::run`]; [`Error::is_query`] when `pg_stat_ssl` cannot be read.
pub async fn run_encrypted(
    pg: &TestPostgres,
    setup: RotationSetup,
    workload: Arc<dyn Workload>,
    config: &ScenarioConfig,
) -> Result<EncryptedRun, Error> {
    let roles = setup.roles().to_vec();
    let client = pg.admin().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
            let (mut peak, mut unencrypted, mut samples) = (0, 0, 0);
            while !stop.load(Ordering::Relaxed) {
                let seen = session_encryption(&client, &roles).await?;
                peak = usize::max(peak, seen.encrypted);
                unencrypted += seen.unencrypted;
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, Error>((peak, unencrypted, samples))
        })
    };
    let report = scenario::run(pg, setup, workload, config, Arc::new(Progress::default())).await;
    stop.store(true, Ordering::Relaxed);
    let watched = watcher
        .await
        .map_err(|e| Error::startup(format!("the pg_stat_ssl watcher panicked: {e}")))?;
    let report = report?;
    let (peak_encrypted, unencrypted_seen, samples) = watched?;
    Ok(EncryptedRun {
        report,
        peak_encrypted,
        unencrypted_seen,
        samples,
    })
}

/// Asserts what a rotation scenario over TLS must show for every adapter, after printing its
/// summary (headed by `adapter`, with `stats`): no failed request, at least three rotations
/// and as many generations, real traffic, nothing stale after the drain, at most the pool's
/// `max_size` sessions both on the server's side (`peak_backends`, the probes included) and in
/// the adapter's own count, every session encrypted and at least one seen, and no failed
/// connect.
///
/// # Panics
///
/// When the run breaks any of that, with the summary in the message.
pub fn assert_encrypted_run(adapter: &str, run: &EncryptedRun, stats: &AdapterStats) {
    let summary = format!("{adapter} over TLS: {}\n{stats:?}", run.summary());
    eprintln!("{summary}");
    let report = &run.report;
    assert_eq!(report.requests_failed, 0, "{summary}");
    assert!(report.rotations >= 3, "{summary}");
    assert!(report.requests_ok > 100, "{summary}");
    assert_eq!(report.stale_after_drain, 0, "{summary}");
    assert!(report.peak_backends <= report.pool_max_size, "{summary}");
    assert!(stats.live() <= report.pool_max_size, "{summary}");
    assert_eq!(run.unencrypted_seen, 0, "{summary}");
    assert!(run.peak_encrypted >= 1, "{summary}");
    assert!(stats.generation.get() >= 3, "{summary}");
    assert_eq!(stats.connect_failures, 0, "{summary}");
}

/// The right address under the wrong name: a TLS cluster's address (`hostaddr`), port and
/// database with [`WRONG_NAME`] as the host the certificate is checked against, `sslmode=require`
/// and a 10 s connect timeout; no user and no password.
///
/// # Panics
///
/// When `pg` does not listen on an IP address.
pub fn wrong_name_config(pg: &TestPostgres) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(WRONG_NAME)
        .hostaddr(pg.server_host().parse().expect("an IP address"))
        .port(pg.port())
        .dbname(pg.database())
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(10));
    config
}

/// Asserts that a connect the client's TLS check refused failed at once (within 3 s of its
/// start, `took`) with an error whose chain names every one of `expected` and never `password`;
/// prints the chain after `adapter` first. Returns the chain.
///
/// # Panics
///
/// When it took longer, or the chain lacks an expected text or holds the password.
pub fn assert_refused_at_once(
    adapter: &str,
    err: &(dyn std::error::Error + 'static),
    took: Duration,
    expected: &[&str],
    password: &str,
) -> String {
    let text = crate::harness::error_chain(err);
    eprintln!("{adapter}: {text}");
    assert!(took < REFUSED_WITHIN, "failed after {took:?}: {text}");
    for needle in expected {
        assert!(text.contains(needle), "{needle:?} missing from {text}");
    }
    assert!(!text.contains(password), "{text}");
    text
}

/// How a pool of the conformance suite's TLS cases connects to a TLS cluster: `sslmode=verify-full`
/// trusting one CA under one host name, or without TLS at all. An adapter's
/// [`Adapter::build_tls`](crate::conformance::Adapter::build_tls) turns it into its own
/// settings: [`tokio_postgres_config`](Self::tokio_postgres_config) with a connector on
/// [`client_config`](Self::client_config) (tokio-postgres-rustls), or [`host`](Self::host),
/// [`ca_cert_pem`](Self::ca_cert_pem) and [`is_tls`](Self::is_tls) (sqlx's
/// `ssl_root_cert_from_pem` and `PgSslMode::VerifyFull`, else `PgSslMode::Disable`).
#[derive(Clone)]
pub struct TlsConnect {
    host: &'static str,
    /// The trusted CA (PEM, DER); `None` without TLS.
    root: Option<(String, CertificateDer<'static>)>,
}

impl TlsConnect {
    /// `verify-full` trusting the cluster's CA, under the certificate's name: connects.
    pub fn verify_full(cluster: &ClusterTls) -> TlsConnect {
        TlsConnect {
            host: SERVER_NAME,
            root: Some((cluster.ca_pem.clone(), cluster.ca_der.clone())),
        }
    }

    /// `verify-full` trusting `ca` only (not the cluster's): the handshake is refused with
    /// `UnknownIssuer`.
    pub fn trusting(ca: &TestCa) -> TlsConnect {
        TlsConnect {
            host: SERVER_NAME,
            root: Some((ca.cert_pem.clone(), ca.cert_der.clone())),
        }
    }

    /// `verify-full` trusting the cluster's CA, connecting to its address under [`WRONG_NAME`]
    /// ([`wrong_name_config`]): the handshake is refused, the certificate is not for that name.
    pub fn wrong_name(cluster: &ClusterTls) -> TlsConnect {
        TlsConnect {
            host: WRONG_NAME,
            ..TlsConnect::verify_full(cluster)
        }
    }

    /// No TLS (`sslmode=disable`): the TLS cluster refuses the login in `pg_hba.conf`
    /// ("no encryption").
    pub fn plaintext() -> TlsConnect {
        TlsConnect {
            host: SERVER_NAME,
            root: None,
        }
    }

    /// Whether the pool uses TLS at all.
    pub fn is_tls(&self) -> bool {
        self.root.is_some()
    }

    /// The host name to connect to and check the certificate against.
    pub fn host(&self) -> &'static str {
        self.host
    }

    /// The one trusted CA certificate, PEM; `None` without TLS.
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.root.as_ref().map(|(pem, _)| pem.as_str())
    }

    /// A rustls client config trusting the one CA (no root at all without TLS, where it is
    /// never used).
    pub fn client_config(&self) -> rustls::ClientConfig {
        client_config(self.root.iter().map(|(_, der)| der.clone()))
    }

    /// The tokio-postgres config to connect with (no user and no password): the cluster's
    /// [`TestPostgres::tls_base_config`], or [`wrong_name_config`], or without TLS the same
    /// with `sslmode=disable`. With a connector on [`client_config`](Self::client_config),
    /// `sslmode=require` checks the chain and the name as `verify-full` does.
    pub fn tokio_postgres_config(&self, pg: &TestPostgres) -> tokio_postgres::Config {
        let mut config = if self.host == WRONG_NAME {
            wrong_name_config(pg)
        } else {
            pg.tls_base_config()
        };
        if !self.is_tls() {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        config
    }
}

impl fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnect")
            .field("host", &self.host)
            .field("tls", &self.is_tls())
            .finish_non_exhaustive()
    }
}
