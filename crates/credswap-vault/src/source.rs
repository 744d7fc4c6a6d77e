//! [`VaultSource`]: KV v2, database dynamic credentials (leases) and database static roles.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use credswap_core::{Credential, CredentialSource, SourceError};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::auth::{Auth, Session, TokenEvents};
use crate::builder::VaultSourceBuilder;
use crate::client::{CallError, Client, encode_path};
use crate::error::classify;
use crate::renewer;

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

/// A dynamic credential and its lease.
struct Lease {
    id: String,
    username: String,
    password: SecretString,
    issued_at: SystemTime,
    /// The lease's own end (renewals move it).
    expires_at: SystemTime,
    /// The first `lease_duration`: renewals ask for as much again.
    duration: Duration,
    renewable: bool,
    /// A renewal granted less than asked: the lease reached its `max_ttl`.
    capped: bool,
    /// The login epoch of the token that created it: the lease ends with that token.
    token_epoch: u64,
    /// That token's end, once another token replaced it (it can no longer be renewed by us).
    token_end: Option<SystemTime>,
    /// Refused logins while Vault called the lease alive (or could not say): the first and the
    /// last, for [`refused_lease_grace`](crate::VaultSourceBuilder::refused_lease_grace).
    refused: Option<(Instant, Instant)>,
}

impl Lease {
    /// The lease's end, or its token's when that comes first.
    fn end(&self, session: Option<&Session>) -> SystemTime {
        let token_end = match session {
            Some(s) if s.epoch == self.token_epoch => s.expires_at,
            _ => self.token_end,
        };
        token_end.map_or(self.expires_at, |t| t.min(self.expires_at))
    }

    fn info(&self, session: Option<&Session>) -> LeaseInfo {
        LeaseInfo {
            lease_id: self.id.clone(),
            username: self.username.clone(),
            issued_at: self.issued_at,
            expires_at: self.end(session),
            renewable: self.renewable && !self.capped,
        }
    }
}

impl VaultSource {
    /// A KV version 2 secret at `path` of the engine mounted at `mount` (for example `secret`
    /// and `app/db`), with the fields `username` and `password` unless
    /// [`fields`](VaultSourceBuilder::fields) says otherwise.
    pub fn kv2(mount: impl Into<String>, path: impl Into<String>) -> VaultSourceBuilder {
        VaultSourceBuilder::new(Kind::Kv2 {
            mount: mount.into(),
            path: path.into(),
            username_field: "username".to_owned(),
            password_field: "password".to_owned(),
            username: None,
            version: None,
        })
    }

    /// A database secrets engine's dynamic role: `<mount>/creds/<role>` (mount usually
    /// `database`). Every credential is a new database user with a lease.
    pub fn dynamic_role(mount: impl Into<String>, role: impl Into<String>) -> VaultSourceBuilder {
        VaultSourceBuilder::new(Kind::Dynamic {
            mount: mount.into(),
            role: role.into(),
        })
    }

    /// A database secrets engine's static role: `<mount>/static-creds/<role>`. One database user
    /// whose password Vault rotates every `rotation_period`.
    pub fn static_role(mount: impl Into<String>, role: impl Into<String>) -> VaultSourceBuilder {
        VaultSourceBuilder::new(Kind::Static {
            mount: mount.into(),
            role: role.into(),
        })
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
    async fn revoke_leases(&self) -> Result<usize, SourceError> {
        let mut state = self.state.lock().await;
        let now = SystemTime::now();
        let leases: Vec<String> = std::mem::take(&mut state.outstanding)
            .into_iter()
            .filter(|(_, end)| *end > now)
            .map(|(id, _)| id)
            .collect();
        state.lease = None;
        *self.lease_info() = None;
        if leases.is_empty() {
            return Ok(0);
        }
        let token = self.token(&mut state).await?;
        let mut revoked = 0;
        let mut first_error = None;
        for id in &leases {
            match revoke(&self.client, &token, id).await {
                Ok(()) => revoked += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        bump(&self.counters.leases_revoked, revoked as u64);
        match first_error {
            Some(e) if revoked == 0 => Err(e),
            Some(e) => {
                tracing::warn!(error = %e, revoked, of = leases.len(), "revoking some leases failed");
                Ok(revoked)
            }
            None => Ok(revoked),
        }
    }

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

    async fn fetch_kv2(&self, token: &SecretString) -> Result<Credential, SourceError> {
        let Kind::Kv2 {
            username_field,
            password_field,
            username,
            version,
            ..
        } = &self.kind
        else {
            unreachable!("fetch_kv2 is called for KV v2 only")
        };
        let query = version.map(|v| format!("?version={v}")).unwrap_or_default();
        let path = self.kind.path();
        bump(&self.counters.reads, 1);
        let answer = match self
            .client
            .call(Method::GET, &format!("{path}{query}"), Some(token), None)
            .await
        {
            Ok(answer) => answer,
            // A deleted or destroyed version answers 404 with its metadata.
            Err(CallError::Status {
                status: 404,
                metadata: Some(metadata),
                ..
            }) => return Err(gone_version(&path, &metadata)),
            Err(e) => return Err(classify(&format!("read of {path}"), e)),
        };
        let data = answer
            .get("data")
            .filter(|d| d.is_object())
            .ok_or_else(|| SourceError::malformed(format!("{path} answered without data")))?;
        let metadata = data.get("metadata").cloned().unwrap_or(Value::Null);
        let number = metadata.get("version").and_then(Value::as_u64);
        let fields = match data.get("data") {
            Some(Value::Object(fields)) => fields,
            _ => return Err(gone_version(&path, &metadata)),
        };
        let field = |name: &str| -> Result<SecretString, SourceError> {
            match fields.get(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(SecretString::from(s.clone())),
                Some(Value::String(_)) => Err(SourceError::malformed(format!(
                    "{path}: field \"{name}\" is empty"
                ))),
                Some(other) => Err(SourceError::malformed(format!(
                    "{path}: field \"{name}\" is a JSON {}, not a string",
                    json_type(other)
                ))),
                None => Err(SourceError::malformed(format!(
                    "{path}: no field \"{name}\" (fields: {})",
                    fields.keys().cloned().collect::<Vec<_>>().join(", ")
                ))),
            }
        };
        let password = field(password_field)?;
        let user = match (fields.get(username_field.as_str()), username) {
            (None, Some(fixed)) => fixed.clone(),
            _ => {
                use secrecy::ExposeSecret;
                field(username_field)?.expose_secret().to_owned()
            }
        };
        let mut credential = Credential::new(user, password);
        if let Some(n) = number {
            credential = credential.with_version(n.to_string());
        }
        if let Some(at) = metadata
            .get("created_time")
            .and_then(Value::as_str)
            .and_then(parse_time)
        {
            credential = credential.with_issued_at(at);
        }
        Ok(credential)
    }

    async fn fetch_static(&self, token: &SecretString) -> Result<Credential, SourceError> {
        let answer = self.read(token, "").await?;
        let path = self.kind.path();
        let data = answer
            .get("data")
            .ok_or_else(|| SourceError::malformed(format!("{path} answered without data")))?;
        let (username, password) = login_of(data, &path)?;
        let mut credential = Credential::new(username, password);
        let last = data.get("last_vault_rotation").and_then(Value::as_str);
        if let Some(last) = last {
            credential = credential.with_version(last);
            if let Some(at) = parse_time(last) {
                credential = credential.with_issued_at(at);
            }
        }
        if let Some(period) = data
            .get("rotation_period")
            .and_then(Value::as_u64)
            .filter(|p| *p > 0)
        {
            credential = credential.with_rotation_interval(Duration::from_secs(period));
        }
        if let Some(ttl) = data.get("ttl").and_then(Value::as_u64) {
            // Vault rotates the password in `ttl` seconds; the old one stops working then.
            credential =
                credential.with_next_rotation_at(SystemTime::now() + Duration::from_secs(ttl));
        }
        Ok(credential)
    }

    async fn fetch_dynamic(
        &self,
        state: &mut State,
        token: &SecretString,
    ) -> Result<Credential, SourceError> {
        if let Some(id) = self.take_suspect() {
            self.check_refused(state, token, &id).await?;
        }
        let now = SystemTime::now();
        if let Some(lease) = state.lease.as_mut() {
            let margin = self.lease_margin.min(lease.duration / 2);
            let remaining = lease.expires_at.duration_since(now).unwrap_or_default();
            // Renew halfway between the issue and the margin: well before the provider's
            // retirement point (`expires_at - expiry_margin`, with `expiry_margin <= margin`),
            // which would retire the connections of a lease about to be renewed.
            let renew_below = margin + lease.duration.saturating_sub(margin) / 2;
            if lease.renewable && !lease.capped && remaining <= renew_below {
                match renew(&self.client, token, &lease.id, lease.duration).await {
                    Ok(renewal) => {
                        bump(&self.counters.lease_renewals, 1);
                        renewed(
                            lease,
                            state.session.as_ref(),
                            &mut state.outstanding,
                            &renewal,
                            now,
                        );
                    }
                    Err(RenewError::Gone(e)) => {
                        // Revoked or expired behind our back: its user is gone; issue another.
                        bump(&self.counters.lease_renewal_failures, 1);
                        bump(&self.counters.leases_lost, 1);
                        tracing::warn!(lease_id = %lease.id, error = %e, "the lease is gone; issuing a new credential");
                        let id = lease.id.clone();
                        state.outstanding.retain(|(i, _)| *i != id);
                        state.lease = None;
                    }
                    Err(RenewError::Failed(e)) => {
                        bump(&self.counters.lease_renewal_failures, 1);
                        tracing::warn!(lease_id = %lease.id, error = %e, "renewing the lease failed");
                        // While it has time left the provider keeps serving it (and says so in
                        // its health); near its end a new credential is issued instead.
                        if lease.end(state.session.as_ref()) > now + margin {
                            return Err(e);
                        }
                    }
                }
            }
            if let Some(lease) = &state.lease {
                let end = lease.end(state.session.as_ref());
                if end > now + margin {
                    *self.lease_info() = Some(lease.info(state.session.as_ref()));
                    return Ok(leased_credential(lease, end));
                }
                tracing::debug!(lease_id = %lease.id, "the lease ends within the margin; issuing a new credential");
            }
        }
        let issued = self.issue(token, state.session.as_ref()).await?;
        let end = issued.end(state.session.as_ref());
        state.outstanding.retain(|(_, end)| *end > now);
        state.outstanding.push((issued.id.clone(), end));
        let credential = leased_credential(&issued, end);
        *self.lease_info() = Some(issued.info(state.session.as_ref()));
        state.lease = Some(issued);
        Ok(credential)
    }

    /// [`CredentialSource::login_refused`]: marks the lease in use suspect when the refused
    /// credential is its user. Never waits: two short `std` locks.
    fn login_refused(&self, credential: &Credential) {
        // KV v2 and static roles read Vault on every fetch: there is no cache to distrust.
        if !matches!(self.kind, Kind::Dynamic { .. }) {
            return;
        }
        let Some(id) = self
            .lease_info()
            .as_ref()
            .filter(|l| {
                credential.version() == Some(l.lease_id.as_str())
                    && credential.username() == l.username
            })
            .map(|l| l.lease_id.clone())
        else {
            // An older lease's user: the source has moved on already.
            return;
        };
        bump(&self.counters.login_refusals, 1);
        tracing::info!(lease_id = %id, username = %credential.username(), "the database refused the lease's user; the next fetch checks the lease");
        *self.suspect() = Some(id);
    }

    fn suspect(&self) -> MutexGuard<'_, Option<String>> {
        self.suspect.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_suspect(&self) -> Option<String> {
        self.suspect().take()
    }

    /// After a refused login of lease `id`: serves it again only if Vault says it is alive (and
    /// the refusals have not lasted the grace), else forgets it so that a new user is issued.
    /// Vault unavailable: the error, and the lease stays suspect for the next fetch.
    async fn check_refused(
        &self,
        state: &mut State,
        token: &SecretString,
        id: &str,
    ) -> Result<(), SourceError> {
        let Some(lease) = state.lease.as_mut().filter(|l| l.id == id) else {
            return Ok(());
        };
        let now = SystemTime::now();
        bump(&self.counters.lease_lookups, 1);
        let alive = match lookup(&self.client, token, id).await {
            Lookup::Alive { ttl } => {
                // Vault's word on its end beats our estimate (someone else may renew it).
                lease.expires_at = now + ttl;
                let end = lease.end(state.session.as_ref());
                set_end(&mut state.outstanding, id, end);
                Ok(true)
            }
            Lookup::Gone(e) => Err(e),
            Lookup::Failed(e) if e.is_unavailable() => {
                self.suspect().get_or_insert_with(|| id.to_owned());
                return Err(e);
            }
            Lookup::Failed(e) => {
                // The token may not look leases up (`sys/leases/lookup` is in Vault's default
                // policy; a token without it may still renew): a renewal says as much.
                tracing::debug!(lease_id = %id, error = %e, "cannot look the lease up; renewing it instead");
                match renew(&self.client, token, id, lease.duration).await {
                    Ok(renewal) => {
                        bump(&self.counters.lease_renewals, 1);
                        renewed(
                            lease,
                            state.session.as_ref(),
                            &mut state.outstanding,
                            &renewal,
                            now,
                        );
                        Ok(true)
                    }
                    Err(RenewError::Gone(e)) => Err(e),
                    Err(RenewError::Failed(e)) if e.is_unavailable() => {
                        bump(&self.counters.lease_renewal_failures, 1);
                        self.suspect().get_or_insert_with(|| id.to_owned());
                        return Err(e);
                    }
                    Err(RenewError::Failed(e)) => {
                        bump(&self.counters.lease_renewal_failures, 1);
                        tracing::warn!(lease_id = %id, error = %e, "cannot tell whether the lease is alive after a refused login: give the token `update` on sys/leases/lookup");
                        Ok(false)
                    }
                }
            }
        };
        match alive {
            Err(gone) => {
                bump(&self.counters.leases_lost, 1);
                tracing::warn!(lease_id = %id, username = %lease.username, error = %gone, "the refused lease is gone (revoked from outside?); issuing a new credential");
                state.outstanding.retain(|(i, _)| i != id);
                state.lease = None;
            }
            Ok(known) => {
                let at = Instant::now();
                let grace = self.refused_lease_grace;
                let first = match lease.refused {
                    // Refusals still coming: the same episode.
                    Some((first, last)) if at.duration_since(last) <= grace => first,
                    _ => at,
                };
                lease.refused = Some((first, at));
                let refused_for = at.duration_since(first);
                if refused_for >= grace {
                    bump(&self.counters.refused_leases_replaced, 1);
                    tracing::warn!(lease_id = %id, username = %lease.username, alive = known, refused_for_ms = refused_for.as_millis() as u64, "the database keeps refusing the lease's user although Vault keeps the lease (the user gone from a restored database?); issuing a new credential");
                    // Kept among the outstanding leases: revoked with them, or it ends at its TTL.
                    state.lease = None;
                } else {
                    tracing::info!(lease_id = %id, alive = known, "the refused lease is alive in Vault; serving it (a refusal for another reason?)");
                }
            }
        }
        Ok(())
    }

    /// Reads `creds/ROLE`: a new user and its lease.
    async fn issue(
        &self,
        token: &SecretString,
        session: Option<&Session>,
    ) -> Result<Lease, SourceError> {
        let now = SystemTime::now();
        let answer = self.read(token, "").await?;
        let path = self.kind.path();
        let data = answer
            .get("data")
            .ok_or_else(|| SourceError::malformed(format!("{path} answered without data")))?;
        let (username, password) = login_of(data, &path)?;
        let id = answer
            .get("lease_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                SourceError::malformed(format!(
                    "{path} answered without a lease: is this a dynamic role?"
                ))
            })?
            .to_owned();
        let seconds = answer
            .get("lease_duration")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let duration = Duration::from_secs(seconds);
        bump(&self.counters.leases_issued, 1);
        tracing::debug!(lease_id = %id, %username, lease_s = seconds, "issued a dynamic credential");
        Ok(Lease {
            id,
            username,
            password,
            issued_at: now,
            expires_at: now + duration,
            duration,
            renewable: answer
                .get("renewable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            capped: false,
            token_epoch: session.map_or(0, |s| s.epoch),
            token_end: None,
            refused: None,
        })
    }
}

/// A KV v2 version without data: deleted or destroyed.
fn gone_version(path: &str, metadata: &Value) -> SourceError {
    let state = if metadata.get("destroyed").and_then(Value::as_bool) == Some(true) {
        "destroyed"
    } else {
        "deleted"
    };
    let number = metadata
        .get("version")
        .and_then(Value::as_u64)
        .map_or_else(|| "(unknown)".to_owned(), |n| n.to_string());
    SourceError::malformed(format!(
        "{path}: version {number} is {state}; write a new version or undelete it"
    ))
}

fn leased_credential(lease: &Lease, end: SystemTime) -> Credential {
    Credential::new(lease.username.clone(), lease.password.clone())
        .with_version(lease.id.clone())
        .with_issued_at(lease.issued_at)
        .with_expires_at(end)
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

/// What a renewal answered, applied to the lease; the outstanding list follows its end.
fn renewed(
    lease: &mut Lease,
    session: Option<&Session>,
    outstanding: &mut [(String, SystemTime)],
    renewal: &Renewal,
    now: SystemTime,
) {
    // Vault says so in a warning; the TTL it answers may be a second short of the increment
    // without any cap (it truncates).
    lease.capped = renewal.capped;
    lease.renewable = renewal.renewable;
    lease.expires_at = now + renewal.granted;
    let end = lease.end(session);
    set_end(outstanding, &lease.id, end);
    tracing::debug!(lease_id = %lease.id, granted_s = renewal.granted.as_secs(), capped = lease.capped, "renewed the lease");
}

fn set_end(outstanding: &mut [(String, SystemTime)], lease_id: &str, end: SystemTime) {
    for (id, until) in outstanding {
        if *id == lease_id {
            *until = end;
        }
    }
}

/// What `sys/leases/lookup` said about a lease.
enum Lookup {
    /// Vault has it, with this much time left.
    Alive { ttl: Duration },
    /// `invalid lease` / `lease not found` (or no time left): revoked or expired.
    Gone(SourceError),
    /// Anything else: no answer, no permission.
    Failed(SourceError),
}

/// `PUT sys/leases/lookup`: whether Vault still has the lease, without changing it.
async fn lookup(client: &Client, token: &SecretString, lease_id: &str) -> Lookup {
    let body = json!({ "lease_id": lease_id });
    let what = format!("lookup of lease {lease_id}");
    match client
        .call(Method::PUT, "sys/leases/lookup", Some(token), Some(&body))
        .await
    {
        Ok(answer) => {
            let ttl = answer
                .get("data")
                .and_then(|d| d.get("ttl"))
                .and_then(Value::as_u64);
            match ttl {
                Some(0) => Lookup::Gone(SourceError::other(format!(
                    "{what}: the lease has no time left"
                ))),
                Some(seconds) => Lookup::Alive {
                    ttl: Duration::from_secs(seconds),
                },
                None => Lookup::Failed(SourceError::malformed(format!(
                    "{what} answered without a ttl"
                ))),
            }
        }
        Err(e) if e.says(400, "invalid lease") || e.says(400, "lease not found") => {
            Lookup::Gone(classify(&what, e))
        }
        Err(e) => Lookup::Failed(classify(&what, e)),
    }
}

struct Renewal {
    granted: Duration,
    renewable: bool,
    capped: bool,
}

enum RenewError {
    /// `lease not found` / `invalid lease`: revoked or expired.
    Gone(SourceError),
    Failed(SourceError),
}

async fn renew(
    client: &Client,
    token: &SecretString,
    lease_id: &str,
    increment: Duration,
) -> Result<Renewal, RenewError> {
    let body = json!({"lease_id": lease_id, "increment": increment.as_secs().max(1)});
    let answer = client
        .call(Method::PUT, "sys/leases/renew", Some(token), Some(&body))
        .await
        .map_err(|e| {
            let gone = e.says(400, "lease not found") || e.says(400, "invalid lease");
            let err = classify(&format!("renewal of lease {lease_id}"), e);
            if gone {
                RenewError::Gone(err)
            } else {
                RenewError::Failed(err)
            }
        })?;
    let capped = answer
        .get("warnings")
        .and_then(Value::as_array)
        .is_some_and(|w| {
            w.iter()
                .filter_map(Value::as_str)
                .any(|w| w.contains("max_ttl") || w.contains("capped"))
        });
    Ok(Renewal {
        granted: Duration::from_secs(
            answer
                .get("lease_duration")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        ),
        renewable: answer
            .get("renewable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        capped,
    })
}

async fn revoke(client: &Client, token: &SecretString, lease_id: &str) -> Result<(), SourceError> {
    let body = json!({"lease_id": lease_id});
    match client
        .call(Method::PUT, "sys/leases/revoke", Some(token), Some(&body))
        .await
    {
        Ok(_) => Ok(()),
        // Already over: nothing to revoke.
        Err(e) if e.says(400, "lease not found") || e.says(400, "invalid lease") => Ok(()),
        Err(e) => Err(classify(&format!("revocation of lease {lease_id}"), e)),
    }
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

impl Drop for Inner {
    /// With [`revoke_on_drop`](VaultSourceBuilder::revoke_on_drop), revokes the leases still
    /// running on the current Tokio runtime (best effort: a runtime that shuts down at once may
    /// not run it; [`VaultSource::revoke_leases`] is the awaited way). Runs when the source is
    /// dropped, or just after, when the token renewer lets go of it.
    fn drop(&mut self) {
        if !self.revoke_on_drop {
            return;
        }
        let state = self.state.get_mut();
        let now = SystemTime::now();
        let leases: Vec<String> = std::mem::take(&mut state.outstanding)
            .into_iter()
            .filter(|(_, end)| *end > now)
            .map(|(id, _)| id)
            .collect();
        if leases.is_empty() {
            return;
        }
        let Some(token) = state
            .session
            .as_ref()
            .filter(|s| s.expires_at.is_none_or(|end| end > now))
            .map(|s| s.token.clone())
        else {
            tracing::warn!(
                leases = leases.len(),
                "no valid Vault token left to revoke the leases with"
            );
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                leases = leases.len(),
                "dropped outside a Tokio runtime: leases not revoked (they end at their TTL)"
            );
            return;
        };
        let client = self.client.clone();
        runtime.spawn(async move {
            for id in leases {
                match revoke(&client, &token, &id).await {
                    Ok(()) => tracing::debug!(lease_id = %id, "revoked the lease"),
                    Err(e) => {
                        tracing::warn!(lease_id = %id, error = %e, "revoking the lease failed")
                    }
                }
            }
        });
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

    #[test]
    fn a_lease_ends_with_its_token() {
        let now = SystemTime::now();
        let lease = Lease {
            id: "database/creds/app/x".into(),
            username: "v-app".into(),
            password: SecretString::from("pw".to_owned()),
            issued_at: now,
            expires_at: now + Duration::from_secs(60),
            duration: Duration::from_secs(60),
            renewable: true,
            capped: false,
            token_epoch: 1,
            token_end: None,
            refused: None,
        };
        let session = |epoch, end| Session {
            token: SecretString::from("t".to_owned()),
            epoch,
            expires_at: end,
            granted: Duration::from_secs(30),
            renewable: true,
            capped: false,
        };
        let soon = now + Duration::from_secs(30);
        assert_eq!(lease.end(Some(&session(1, Some(soon)))), soon);
        assert_eq!(lease.end(Some(&session(1, None))), lease.expires_at);
        assert_eq!(lease.end(Some(&session(2, Some(soon)))), lease.expires_at);
        assert_eq!(lease.end(None), lease.expires_at);
    }
}
