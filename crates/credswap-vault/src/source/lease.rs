//! Database dynamic credentials: `GET <mount>/creds/<role>` issues a user with a lease, which
//! the source renews (`sys/leases/renew`) and replaces near its end, and revokes
//! (`sys/leases/revoke`) at shutdown.

use std::time::{Duration, Instant, SystemTime};

use credswap_core::{Credential, SourceError};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

use super::{Inner, LeaseInfo, State, bump, login_of};
use crate::auth::Session;
use crate::client::Client;
use crate::error::classify;

/// A dynamic credential and its lease.
pub(super) struct Lease {
    pub(super) id: String,
    pub(super) username: String,
    pub(super) password: SecretString,
    pub(super) issued_at: SystemTime,
    /// The lease's own end (renewals move it).
    pub(super) expires_at: SystemTime,
    /// The first `lease_duration`: renewals ask for as much again.
    pub(super) duration: Duration,
    pub(super) renewable: bool,
    /// A renewal granted less than asked: the lease reached its `max_ttl`.
    pub(super) capped: bool,
    /// The login epoch of the token that created it: the lease ends with that token.
    pub(super) token_epoch: u64,
    /// That token's end, once another token replaced it (it can no longer be renewed by us).
    pub(super) token_end: Option<SystemTime>,
    /// Refused logins while Vault called the lease alive (or could not say): the first and the
    /// last, for [`refused_lease_grace`](crate::VaultSourceBuilder::refused_lease_grace).
    pub(super) refused: Option<(Instant, Instant)>,
}

impl Lease {
    /// The lease's end, or its token's when that comes first.
    pub(super) fn end(&self, session: Option<&Session>) -> SystemTime {
        let token_end = match session {
            Some(s) if s.epoch == self.token_epoch => s.expires_at,
            _ => self.token_end,
        };
        token_end.map_or(self.expires_at, |t| t.min(self.expires_at))
    }

    pub(super) fn info(&self, session: Option<&Session>) -> LeaseInfo {
        LeaseInfo {
            lease_id: self.id.clone(),
            username: self.username.clone(),
            issued_at: self.issued_at,
            expires_at: self.end(session),
            renewable: self.renewable && !self.capped,
        }
    }
}

impl Inner {
    pub(super) async fn revoke_leases(&self) -> Result<usize, SourceError> {
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

    pub(super) async fn fetch_dynamic(
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
    /// Reads `creds/ROLE`: a new user and its lease.
    pub(super) async fn issue(
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

fn leased_credential(lease: &Lease, end: SystemTime) -> Credential {
    Credential::new(lease.username.clone(), lease.password.clone())
        .with_version(lease.id.clone())
        .with_issued_at(lease.issued_at)
        .with_expires_at(end)
}

/// What a renewal answered, applied to the lease; the outstanding list follows its end.
pub(super) fn renewed(
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

pub(super) fn set_end(outstanding: &mut [(String, SystemTime)], lease_id: &str, end: SystemTime) {
    for (id, until) in outstanding {
        if *id == lease_id {
            *until = end;
        }
    }
}

pub(super) struct Renewal {
    granted: Duration,
    renewable: bool,
    capped: bool,
}

pub(super) enum RenewError {
    /// `lease not found` / `invalid lease`: revoked or expired.
    Gone(SourceError),
    Failed(SourceError),
}

pub(super) async fn renew(
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

pub(super) async fn revoke(
    client: &Client,
    token: &SecretString,
    lease_id: &str,
) -> Result<(), SourceError> {
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

impl Drop for Inner {
    /// With [`revoke_on_drop`](crate::VaultSourceBuilder::revoke_on_drop), revokes the leases
    /// still running on the current Tokio runtime (best effort: a runtime that shuts down at once
    /// may not run it; [`VaultSource::revoke_leases`](crate::VaultSource::revoke_leases) is the
    /// awaited way). Runs when the source is dropped, or just after, when the token renewer lets
    /// go of it.
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

#[cfg(test)]
mod tests {
    use super::*;

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
