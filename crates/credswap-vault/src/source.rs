//! [`VaultSource`]: KV v2, database dynamic credentials (leases) and database static roles.
//!
//! This module holds the source type, its state, the token and what every kind shares; each
//! kind's reading is in its own module: [`kv2`] (KV v2), [`static_role`] (database static
//! roles), [`lease`] (database dynamic credentials and their leases) and [`refused`] (the
//! lease lookup after a refused login).

mod kv2;
mod lease;
mod refused;
mod static_role;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use credswap_core::{Credential, CredentialSource, SourceError};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::Value;

use crate::auth::{Auth, Session, TokenEvents};
use crate::builder::VaultSourceBuilder;
use crate::client::{Client, encode_path};
use crate::error::classify;
use crate::kind::{DynamicRole, Kv2, StaticRole};
use crate::renewer;
use lease::Lease;

/// How many calls a [`VaultSource`] has made, and what they did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Secret reads (KV v2 reads, `creds`, `static-creds`), also the failed ones.
    pub reads: u64,
    /// Dynamic credentials issued: each a new database user with its own lease.
    pub leases_issued: u64,
    /// Lease renewals that succeeded (`sys/leases/renew`).
    pub lease_renewals: u64,
    /// Lease renewals that failed.
    pub lease_renewal_failures: u64,
    /// Leases revoked by the source (`sys/leases/revoke`).
    pub leases_revoked: u64,
    /// AppRole logins.
    pub logins: u64,
    /// Token renewals (`auth/token/renew-self`), in a fetch or by the background renewer.
    pub token_renewals: u64,
    /// Refused logins of the lease in use that the provider reported
    /// ([`CredentialSource::login_refused`]); each makes the next fetch check the lease.
    pub login_refusals: u64,
    /// Lease lookups (`sys/leases/lookup`) after a refused login.
    pub lease_lookups: u64,
    /// Leases found revoked or expired behind the source's back (by a lookup or a renewal):
    /// each was replaced by a new user at once.
    pub leases_lost: u64,
    /// Leases Vault still called alive whose user the database kept refusing for the
    /// [`refused_lease_grace`](crate::VaultSourceBuilder::refused_lease_grace): replaced too.
    pub refused_leases_replaced: u64,
}

/// The lease of the dynamic credential in use, without its password.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseInfo {
    /// Vault's lease id (`database/creds/ROLE/...`).
    pub lease_id: String,
    /// The database user Vault created for it.
    pub username: String,
    /// When the credential was issued.
    pub issued_at: SystemTime,
    /// When the lease ends as far as is known now (renewals move it; the token that created it
    /// ending first ends it too).
    pub expires_at: SystemTime,
    /// Whether Vault still renews it (false once it reached its `max_ttl`).
    pub renewable: bool,
}

/// What the source reads.
#[derive(Clone)]
pub(crate) enum Kind {
    Kv2 {
        mount: String,
        path: String,
        username_field: String,
        password_field: String,
        username: Option<String>,
        version: Option<u64>,
    },
    Dynamic {
        mount: String,
        role: String,
    },
    Static {
        mount: String,
        role: String,
    },
}

impl Kind {
    /// The path read, for messages and `Debug`.
    fn path(&self) -> String {
        match self {
            Kind::Kv2 { mount, path, .. } => {
                format!("{}/data/{}", encode_path(mount), encode_path(path))
            }
            Kind::Dynamic { mount, role } => {
                format!("{}/creds/{}", encode_path(mount), encode_path(role))
            }
            Kind::Static { mount, role } => {
                format!("{}/static-creds/{}", encode_path(mount), encode_path(role))
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Kind::Kv2 { .. } => "kv-v2",
            Kind::Dynamic { .. } => "database dynamic role",
            Kind::Static { .. } => "database static role",
        }
    }
}

/// A [`CredentialSource`] reading HashiCorp Vault or OpenBao: a KV v2 secret, a database
/// secrets engine's dynamic role (`creds/ROLE`: a new user with a lease per credential) or
/// static role (`static-creds/ROLE`: one user whose password Vault rotates).
///
/// Built with [`VaultSource::kv2`], [`VaultSource::dynamic_role`] or
/// [`VaultSource::static_role`]; see the [crate docs](crate) for what each reads and how its
/// schedule reaches the provider.
///
/// `Debug` prints the address, the path, the auth method, the current lease (id, user, end),
/// when the token is next renewed and the [`Stats`], never a password, a token or a secret id.
///
/// The first fetch spawns the token renewer on its Tokio runtime (see the [crate
/// docs](crate#auth)); it ends when the source is dropped.
pub struct VaultSource {
    inner: Arc<Inner>,
    /// Whether the token renewer was spawned (by the first fetch, on its Tokio runtime).
    renewer: AtomicBool,
}

/// The source's state; the token renewer holds only a `Weak` to it.
pub(crate) struct Inner {
    client: Client,
    kind: Kind,
    auth: Auth,
    lease_margin: Duration,
    refused_lease_grace: Duration,
    revoke_on_drop: bool,
    state: tokio::sync::Mutex<State>,
    /// The lease in use, readable without the async lock.
    lease_info: Mutex<Option<LeaseInfo>>,
    /// The id of a lease whose user the database refused ([`CredentialSource::login_refused`]):
    /// the next fetch checks it before serving it.
    suspect: Mutex<Option<String>>,
    /// When the token is next due for renewal (or AppRole for a new login); the renewer
    /// watches it, and ends when this sender is dropped with the source.
    token_due: tokio::sync::watch::Sender<Option<SystemTime>>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    leases_issued: AtomicU64,
    lease_renewals: AtomicU64,
    lease_renewal_failures: AtomicU64,
    leases_revoked: AtomicU64,
    logins: AtomicU64,
    token_renewals: AtomicU64,
    login_refusals: AtomicU64,
    lease_lookups: AtomicU64,
    leases_lost: AtomicU64,
    refused_leases_replaced: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

#[derive(Default)]
struct State {
    session: Option<Session>,
    lease: Option<Lease>,
    /// Leases issued and not yet known to be over, for revocation: (id, end).
    outstanding: Vec<(String, SystemTime)>,
}

impl VaultSource {
    /// A KV version 2 secret at `path` of the engine mounted at `mount` (for example `secret`
    /// and `app/db`), with the fields `username` and `password` unless
    /// [`username_field`](VaultSourceBuilder::username_field) and
    /// [`password_field`](VaultSourceBuilder::password_field) say otherwise.
    pub fn kv2(mount: impl Into<String>, path: impl Into<String>) -> VaultSourceBuilder<Kv2> {
        VaultSourceBuilder::new(Kv2::new(mount.into(), path.into()))
    }

    /// A database secrets engine's dynamic role: `<mount>/creds/<role>` (mount usually
    /// `database`). Every credential is a new database user with a lease.
    pub fn dynamic_role(
        mount: impl Into<String>,
        role: impl Into<String>,
    ) -> VaultSourceBuilder<DynamicRole> {
        VaultSourceBuilder::new(DynamicRole::new(mount.into(), role.into()))
    }

    /// A database secrets engine's static role: `<mount>/static-creds/<role>`. One database user
    /// whose password Vault rotates every `rotation_period`.
    pub fn static_role(
        mount: impl Into<String>,
        role: impl Into<String>,
    ) -> VaultSourceBuilder<StaticRole> {
        VaultSourceBuilder::new(StaticRole::new(mount.into(), role.into()))
    }

    pub(crate) fn new(
        client: Client,
        kind: Kind,
        auth: Auth,
        lease_margin: Duration,
        refused_lease_grace: Duration,
        revoke_on_drop: bool,
    ) -> Self {
        let (token_due, _) = tokio::sync::watch::channel(None);
        Self {
            inner: Arc::new(Inner {
                client,
                kind,
                auth,
                lease_margin,
                refused_lease_grace,
                revoke_on_drop,
                state: tokio::sync::Mutex::new(State::default()),
                lease_info: Mutex::new(None),
                suspect: Mutex::new(None),
                token_due,
                counters: Counters::default(),
            }),
            renewer: AtomicBool::new(false),
        }
    }

    /// The server's address, as given.
    pub fn address(&self) -> &str {
        self.inner.client.address()
    }

    /// The API path read (`secret/data/app/db`, `database/creds/app`, ...).
    pub fn path(&self) -> String {
        self.inner.kind.path()
    }

    /// How many calls the source has made.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            reads: load(&c.reads),
            leases_issued: load(&c.leases_issued),
            lease_renewals: load(&c.lease_renewals),
            lease_renewal_failures: load(&c.lease_renewal_failures),
            leases_revoked: load(&c.leases_revoked),
            logins: load(&c.logins),
            token_renewals: load(&c.token_renewals),
            login_refusals: load(&c.login_refusals),
            lease_lookups: load(&c.lease_lookups),
            leases_lost: load(&c.leases_lost),
            refused_leases_replaced: load(&c.refused_leases_replaced),
        }
    }

    /// The lease of the dynamic credential in use; `None` before the first fetch and for KV and
    /// static roles.
    pub fn lease(&self) -> Option<LeaseInfo> {
        self.inner.lease_info().clone()
    }

    /// Revokes every lease this source issued that has not ended yet (`sys/leases/revoke`):
    /// their database users are dropped, and their sessions are no longer the provider's
    /// concern. Call it when the application shuts down, after closing its pools. Returns how
    /// many were revoked; the next fetch issues a new credential.
    pub async fn revoke_leases(&self) -> Result<usize, SourceError> {
        self.inner.revoke_leases().await
    }

    /// Spawns the token renewer on the current Tokio runtime, once (see the `renewer` module).
    /// Outside a Tokio runtime there is none, and the token is renewed inside fetches only.
    fn start_renewer(&self) {
        if self.renewer.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.renewer.swap(true, Ordering::AcqRel) {
            return;
        }
        runtime.spawn(renewer::run(
            Arc::downgrade(&self.inner),
            self.inner.token_due.subscribe(),
        ));
    }
}

impl Inner {
    fn lease_info(&self) -> MutexGuard<'_, Option<LeaseInfo>> {
        self.lease_info.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn token(&self, state: &mut State) -> Result<SecretString, SourceError> {
        let mut events = TokenEvents::default();
        let before = state.session.as_ref().map(|s| (s.epoch, s.expires_at));
        let result = self
            .auth
            .ensure(&self.client, &mut state.session, &mut events)
            .await;
        if let (Some((epoch, end)), Some(lease)) = (before, state.lease.as_mut()) {
            // A new login: the lease still ends with the token that created it.
            let replaced = state.session.as_ref().is_some_and(|s| s.epoch != epoch);
            if replaced && lease.token_epoch == epoch {
                lease.token_end = end;
            }
        }
        bump(&self.counters.logins, events.logins);
        bump(&self.counters.token_renewals, events.renewals);
        let due = self
            .auth
            .renewal_due(state.session.as_ref(), SystemTime::now());
        self.token_due.send_if_modified(|current| {
            let changed = *current != due;
            *current = due;
            changed
        });
        result
    }

    /// The renewer's turn: renews the token (or logs in again) if it is due, as a fetch would.
    /// Returns whether the next renewal is now in the future (false: it failed, try again later).
    pub(crate) async fn renew_token(&self) -> bool {
        let mut state = self.state.lock().await;
        if let Err(e) = self.token(&mut state).await {
            tracing::warn!(error = %e, "the background renewal of the Vault token failed");
        }
        let due = *self.token_due.borrow();
        due.is_none_or(|at| at > SystemTime::now())
    }

    /// One read of the secret's path.
    async fn read(&self, token: &SecretString, query: &str) -> Result<Value, SourceError> {
        bump(&self.counters.reads, 1);
        let path = self.kind.path();
        self.client
            .call(Method::GET, &format!("{path}{query}"), Some(token), None)
            .await
            .map_err(|e| classify(&format!("read of {path}"), e))
    }
}

/// `username` and `password` of a database engine's answer.
fn login_of(data: &Value, path: &str) -> Result<(String, SecretString), SourceError> {
    let text = |name: &str| match data.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(SourceError::malformed(format!(
            "{path}: field \"{name}\" is empty"
        ))),
        Some(other) => Err(SourceError::malformed(format!(
            "{path}: field \"{name}\" is a JSON {}, not a string",
            json_type(other)
        ))),
        None => Err(SourceError::malformed(format!(
            "{path}: no field \"{name}\" in the answer"
        ))),
    };
    Ok((text("username")?, SecretString::from(text("password")?)))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// An RFC 3339 time as Vault writes it (`2026-01-02T03:04:05.123456789Z`).
pub(crate) fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(text).ok())
}

#[async_trait]
impl CredentialSource for VaultSource {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        self.start_renewer();
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        let token = inner.token(&mut state).await?;
        match &inner.kind {
            Kind::Kv2 { .. } => inner.fetch_kv2(&token).await,
            Kind::Static { .. } => inner.fetch_static(&token).await,
            Kind::Dynamic { .. } => inner.fetch_dynamic(&mut state, &token).await,
        }
    }

    /// A dynamic role's [`lease_margin`](crate::VaultSourceBuilder::lease_margin): the
    /// provider refuses a `Policy::expiry_margin` longer than it.
    fn replaces_before_expiry(&self) -> Option<Duration> {
        matches!(self.inner.kind, Kind::Dynamic { .. }).then_some(self.inner.lease_margin)
    }

    /// A dynamic role: when `credential` is the lease in use, the next fetch does not serve it
    /// from the source's cache but looks the lease up (`sys/leases/lookup`) and issues a new
    /// user if Vault no longer has it (revoked from outside, a restore), or if the database has
    /// kept refusing it for the [`refused_lease_grace`](crate::VaultSourceBuilder::refused_lease_grace).
    /// KV v2 and static roles read Vault on every fetch: nothing to do. Never blocks.
    fn login_refused(&self, credential: &Credential) {
        self.inner.login_refused(credential);
    }
}

impl fmt::Debug for VaultSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let mut d = f.debug_struct("VaultSource");
        d.field("address", &inner.client.address())
            .field("kind", &inner.kind.name())
            .field("path", &inner.kind.path())
            .field("auth", &inner.auth);
        if let Kind::Dynamic { .. } = inner.kind {
            d.field("lease", &*inner.lease_info())
                .field("lease_margin", &inner.lease_margin)
                .field("refused_lease_grace", &inner.refused_lease_grace)
                .field("revoke_on_drop", &inner.revoke_on_drop);
        }
        d.field("token_renewal_due", &*inner.token_due.borrow())
            .field("stats", &self.stats())
            .finish()
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_provider_refuses_an_expiry_margin_longer_than_the_lease_margin_before_any_read() {
        use credswap_core::{Policy, RotatingCredentials};
        // Nothing listens there: the refusal comes before the first fetch, so no lease is
        // taken for a pool that will not be built.
        let dynamic = || {
            VaultSource::dynamic_role("database", "app")
                .address("http://127.0.0.1:9")
                .token("t".to_owned())
                .lease_margin(Duration::from_secs(30))
                .build()
                .unwrap()
        };
        let err = RotatingCredentials::new(dynamic(), Policy::default())
            .await
            .expect_err("the default expiry_margin (1m) is longer than 30s");
        assert!(err.is_policy(), "{err:?}");
        assert!(err.to_string().contains("lease_margin"), "{err}");
        assert_eq!(
            dynamic().replaces_before_expiry(),
            Some(Duration::from_secs(30))
        );
        let kv = VaultSource::kv2("secret", "db")
            .address("http://127.0.0.1:9")
            .token("t".to_owned())
            .build()
            .unwrap();
        assert_eq!(kv.replaces_before_expiry(), None);
    }

    #[test]
    fn vault_times_parse() {
        let t = parse_time("2026-11-26T14:40:24.257570868Z").unwrap();
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_795_704_024);
        assert!(parse_time("2026-11-26T14:40:24Z").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
