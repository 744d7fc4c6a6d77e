//! The lease lookup after a refused login: a lease the database refuses is looked up
//! (`sys/leases/lookup`) before it is served again, and replaced when Vault no longer has it or
//! when the refusals outlast the grace.

use std::sync::MutexGuard;
use std::time::{Duration, Instant, SystemTime};

use credswap_core::{Credential, SourceError};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

use super::lease::{RenewError, renew, renewed, set_end};
use super::{Inner, Kind, State, bump};
use crate::client::Client;
use crate::error::classify;

impl Inner {
    /// [`CredentialSource::login_refused`]: marks the lease in use suspect when the refused
    /// credential is its user. Never waits: two short `std` locks.
    pub(super) fn login_refused(&self, credential: &Credential) {
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

    pub(super) fn suspect(&self) -> MutexGuard<'_, Option<String>> {
        self.suspect.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn take_suspect(&self) -> Option<String> {
        self.suspect().take()
    }

    /// After a refused login of lease `id`: serves it again only if Vault says it is alive (and
    /// the refusals have not lasted the grace), else forgets it so that a new user is issued.
    /// Vault unavailable: the error, and the lease stays suspect for the next fetch.
    pub(super) async fn check_refused(
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
