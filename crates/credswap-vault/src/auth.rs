//! How the source logs in to Vault: a token (renewed while renewable) or AppRole (logs in again
//! before its token ends). The token and the secret id are [`SecretString`]s and never print.

use std::fmt;
use std::time::{Duration, SystemTime};

use credswap_core::SourceError;
use reqwest::Method;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{CallError, Client, encode_path};
use crate::error::classify;

/// How the source authenticates to Vault.
///
/// `Debug` names the method (and the AppRole's mount and role id), never the token or the
/// secret id.
///
/// ```
/// use credswap_vault::Auth;
///
/// let auth = Auth::approle("orders-api", "a-secret-id".to_owned()).with_mount("approle");
/// assert!(!format!("{auth:?}").contains("a-secret-id"));
/// ```
#[derive(Clone)]
pub struct Auth {
    method: Method_,
}

#[derive(Clone)]
enum Method_ {
    Token(SecretString),
    AppRole {
        mount: String,
        role_id: String,
        secret_id: SecretString,
    },
}

impl Auth {
    /// A Vault token. When it has a TTL and is renewable, the source renews it
    /// (`auth/token/renew-self`) once half its TTL has passed.
    pub fn token(token: impl Into<SecretString>) -> Self {
        Self {
            method: Method_::Token(token.into()),
        }
    }

    /// AppRole (`auth/approle/login` with a role id and a secret id). The source logs in on its
    /// first fetch, renews the token while it can, and logs in again before it ends.
    pub fn approle(role_id: impl Into<String>, secret_id: impl Into<SecretString>) -> Self {
        Self {
            method: Method_::AppRole {
                mount: "approle".to_owned(),
                role_id: role_id.into(),
                secret_id: secret_id.into(),
            },
        }
    }

    /// The AppRole auth method's mount path (default `approle`); no effect on a token.
    #[must_use]
    pub fn with_mount(mut self, mount: impl Into<String>) -> Self {
        if let Method_::AppRole { mount: m, .. } = &mut self.method {
            *m = mount.into();
        }
        self
    }

    /// `"token"` or `"approle"`.
    pub fn method_name(&self) -> &'static str {
        match self.method {
            Method_::Token(_) => "token",
            Method_::AppRole { .. } => "approle",
        }
    }

    pub(crate) fn is_approle(&self) -> bool {
        matches!(self.method, Method_::AppRole { .. })
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.method {
            Method_::Token(_) => f
                .debug_struct("Auth::Token")
                .field("token", &"[redacted]")
                .finish(),
            Method_::AppRole { mount, role_id, .. } => f
                .debug_struct("Auth::AppRole")
                .field("mount", mount)
                .field("role_id", role_id)
                .field("secret_id", &"[redacted]")
                .finish(),
        }
    }
}

/// The token in use and what Vault said about its life.
pub(crate) struct Session {
    pub(crate) token: SecretString,
    /// Counts logins; leases remember the epoch of the token that created them.
    pub(crate) epoch: u64,
    /// When the token ends; `None` for a token without a TTL (a root token, a periodic token
    /// looked up without one).
    pub(crate) expires_at: Option<SystemTime>,
    /// The TTL Vault granted last (renewals ask for as much again).
    pub(crate) granted: Duration,
    pub(crate) renewable: bool,
    /// A renewal granted less than asked: the token reached its max TTL.
    pub(crate) capped: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("token", &"[redacted]")
            .field("epoch", &self.epoch)
            .field("expires_at", &self.expires_at)
            .field("granted", &self.granted)
            .field("renewable", &self.renewable)
            .finish()
    }
}

/// The `auth` block of a login or renewal. `client_token` is read into a `SecretString` at once.
#[derive(Deserialize)]
struct AuthBlock {
    client_token: Option<String>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct LookupData {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    creation_ttl: u64,
    #[serde(default)]
    renewable: bool,
}

/// What happened to the token on this call, for the source's counters.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TokenEvents {
    pub(crate) logins: u64,
    pub(crate) renewals: u64,
}

impl Auth {
    /// A token to call Vault with: the current one, renewed or replaced when half its TTL has
    /// passed. `session` is the source's; `epoch` counts logins.
    pub(crate) async fn ensure(
        &self,
        client: &Client,
        session: &mut Option<Session>,
        events: &mut TokenEvents,
    ) -> Result<SecretString, SourceError> {
        let now = SystemTime::now();
        let Some(current) = session.as_mut() else {
            let fresh = self.begin(client, 1, events).await?;
            let token = fresh.token.clone();
            *session = Some(fresh);
            return Ok(token);
        };
        let Some(expires_at) = current.expires_at else {
            return Ok(current.token.clone());
        };
        let remaining = expires_at.duration_since(now).unwrap_or_default();
        if remaining > current.granted / 2 {
            return Ok(current.token.clone());
        }
        if current.renewable && !current.capped {
            match renew_self(client, &current.token, current.granted).await {
                Ok(block) => {
                    events.renewals += 1;
                    let granted = Duration::from_secs(block.lease_duration);
                    // Vault truncates a TTL to whole seconds: a second short is no cap.
                    current.capped = granted + Duration::from_secs(1) < current.granted;
                    current.expires_at = Some(now + granted);
                    current.renewable = block.renewable;
                    tracing::debug!(granted_s = granted.as_secs(), "renewed the Vault token");
                    if !current.capped {
                        return Ok(current.token.clone());
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the Vault token failed");
                    if !self.is_approle() {
                        return usable(current, now, e);
                    }
                }
            }
        }
        if !self.is_approle() {
            // A token cannot be replaced: use it to its end.
            let end = current.expires_at.unwrap_or(now);
            if end <= now {
                return Err(SourceError::denied(
                    "the Vault token has expired and cannot be renewed; give the source a new one",
                ));
            }
            return Ok(current.token.clone());
        }
        match self.begin(client, current.epoch + 1, events).await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *session = Some(fresh);
                Ok(token)
            }
            // The old token still works until its end.
            Err(e) => usable(current, now, e),
        }
    }

    /// When [`ensure`](Self::ensure) would next renew the token (half its TTL before its end)
    /// or, for AppRole, log in again: `None` when there is nothing to do (no session yet, a
    /// token without a TTL, a token that can no longer be renewed or has ended: it cannot be
    /// replaced).
    pub(crate) fn renewal_due(
        &self,
        session: Option<&Session>,
        now: SystemTime,
    ) -> Option<SystemTime> {
        let session = session?;
        let end = session.expires_at?;
        let renewable = session.renewable && !session.capped && end > now;
        if !(self.is_approle() || renewable) {
            return None;
        }
        Some(end.checked_sub(session.granted / 2).unwrap_or(end))
    }

    /// A first session: AppRole logs in; a token is looked up for its TTL.
    async fn begin(
        &self,
        client: &Client,
        epoch: u64,
        events: &mut TokenEvents,
    ) -> Result<Session, SourceError> {
        let now = SystemTime::now();
        match &self.method {
            Method_::Token(token) => {
                let answer = match client
                    .call(Method::GET, "auth/token/lookup-self", Some(token), None)
                    .await
                {
                    Ok(answer) => answer,
                    // A token without the default policy may not look itself up: use it as it
                    // is (an invalid token fails on the read that follows, as denied).
                    Err(CallError::Status { status: 403, .. }) => {
                        tracing::debug!("the Vault token may not look itself up; not renewing it");
                        return Ok(Session {
                            token: token.clone(),
                            epoch,
                            expires_at: None,
                            granted: Duration::ZERO,
                            renewable: false,
                            capped: false,
                        });
                    }
                    Err(e) => return Err(classify("token lookup (auth/token/lookup-self)", e)),
                };
                let data: LookupData = answer
                    .get("data")
                    .cloned()
                    .and_then(|d| serde_json::from_value(d).ok())
                    .ok_or_else(|| {
                        SourceError::malformed("token lookup answered without its data")
                    })?;
                let granted = Duration::from_secs(data.creation_ttl.max(data.ttl));
                Ok(Session {
                    token: token.clone(),
                    epoch,
                    expires_at: (data.ttl > 0).then(|| now + Duration::from_secs(data.ttl)),
                    granted,
                    renewable: data.renewable,
                    capped: false,
                })
            }
            Method_::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                use secrecy::ExposeSecret;
                let path = format!("auth/{}/login", encode_path(mount));
                let body = json!({"role_id": role_id, "secret_id": secret_id.expose_secret()});
                let answer = client
                    .call(Method::POST, &path, None, Some(&body))
                    .await
                    .map_err(|e| classify(&format!("AppRole login ({path})"), e))?;
                let block = auth_block(answer).ok_or_else(|| {
                    SourceError::malformed(format!("{path} answered without a token"))
                })?;
                events.logins += 1;
                let token = block.client_token.map(SecretString::from).ok_or_else(|| {
                    SourceError::malformed(format!("{path} answered without a client token"))
                })?;
                let granted = Duration::from_secs(block.lease_duration);
                tracing::debug!(
                    granted_s = granted.as_secs(),
                    "logged in to Vault with AppRole"
                );
                Ok(Session {
                    token,
                    epoch,
                    expires_at: (block.lease_duration > 0).then(|| now + granted),
                    granted,
                    renewable: block.renewable,
                    capped: false,
                })
            }
        }
    }
}

/// The current token while it has time left, else the error.
fn usable(
    current: &Session,
    now: SystemTime,
    err: SourceError,
) -> Result<SecretString, SourceError> {
    if current.expires_at.is_some_and(|end| end > now) {
        Ok(current.token.clone())
    } else {
        Err(err)
    }
}

async fn renew_self(
    client: &Client,
    token: &SecretString,
    increment: Duration,
) -> Result<AuthBlock, SourceError> {
    let body = json!({"increment": format!("{}s", increment.as_secs().max(1))});
    let answer = client
        .call(
            Method::POST,
            "auth/token/renew-self",
            Some(token),
            Some(&body),
        )
        .await
        .map_err(|e| classify("token renewal (auth/token/renew-self)", e))?;
    auth_block(answer).ok_or_else(|| SourceError::malformed("token renewal answered without auth"))
}

fn auth_block(answer: Value) -> Option<AuthBlock> {
    serde_json::from_value(answer.get("auth")?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(ttl: u64, renewable: bool, capped: bool) -> Session {
        let now = SystemTime::now();
        Session {
            token: SecretString::from("t".to_owned()),
            epoch: 1,
            expires_at: (ttl > 0).then(|| now + Duration::from_secs(ttl)),
            granted: Duration::from_secs(ttl),
            renewable,
            capped,
        }
    }

    #[test]
    fn a_renewal_is_due_at_half_the_ttl_while_it_can_be_renewed_or_replaced() {
        let now = SystemTime::now();
        let token = Auth::token("t".to_owned());
        let approle = Auth::approle("r", "s".to_owned());
        let s = session(10, true, false);
        let half = s.expires_at.unwrap() - Duration::from_secs(5);
        assert_eq!(token.renewal_due(Some(&s), now), Some(half));
        assert_eq!(approle.renewal_due(Some(&s), now), Some(half));
        assert_eq!(token.renewal_due(None, now), None);
        // No TTL (a root token): nothing to renew.
        assert_eq!(
            token.renewal_due(Some(&session(0, false, false)), now),
            None
        );
        // A token that cannot be renewed (any more) is used to its end; AppRole logs in again.
        for s in [session(10, false, false), session(10, true, true)] {
            assert_eq!(token.renewal_due(Some(&s), now), None);
            assert_eq!(approle.renewal_due(Some(&s), now), Some(half_of(&s)));
        }
        // An ended token cannot be renewed.
        let later = now + Duration::from_secs(11);
        assert_eq!(token.renewal_due(Some(&s), later), None);
        assert_eq!(approle.renewal_due(Some(&s), later), Some(half));
    }

    fn half_of(s: &Session) -> SystemTime {
        s.expires_at.unwrap() - s.granted / 2
    }
}
