//! How failures of the Vault API become [`SourceError`]s.
//!
//! | what happened | kind |
//! |---|---|
//! | no answer (connection refused or reset, DNS, TLS, a timeout), HTTP 5xx (`503` while Vault is sealed, standby or in maintenance), `429` (rate limited), `412` (a performance standby not caught up), `473` (performance standby), a 2xx body that is not JSON | [`unavailable`](SourceError::unavailable): the provider keeps serving the last good credential and tries again |
//! | HTTP `401`/`403` (`permission denied`: a missing policy, an expired or revoked token, a wrong AppRole secret id) | [`denied`](SourceError::denied) |
//! | a response without the field asked for (KV field names, `username`/`password` of a role), of the wrong JSON type, a KV version that is deleted or destroyed | [`malformed`](SourceError::malformed) |
//! | HTTP `404` (no secret at the path, no such mount), `400` (`unknown role`, `lease not found`), anything else | [`other`](SourceError::other): a configuration mistake, not a permission |
//!
//! Messages name the operation, the path, the HTTP status and Vault's own `errors`; Vault's
//! messages carry no secret values. A response body is never quoted.

use credswap_core::SourceError;

use crate::client::CallError;

/// Classifies a failed call: `what` names the operation and path ("read of database/creds/app").
pub(crate) fn classify(what: &str, err: CallError) -> SourceError {
    match err {
        CallError::Transport(e) => {
            let why = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "no answer"
            };
            // reqwest's message names the URL (address and path, no secret) and the cause.
            SourceError::unavailable(format!("{what} failed: Vault {why}")).with_source(e)
        }
        CallError::Body => SourceError::unavailable(format!(
            "{what} failed: the response is not JSON (a proxy in between?)"
        )),
        CallError::Status { status, errors, .. } => {
            let said = if errors.is_empty() {
                default_message(status).to_owned()
            } else {
                errors.join("; ")
            };
            let message = format!("{what} failed: HTTP {status}: {said}");
            match status {
                401 | 403 => SourceError::denied(message),
                412 | 429 | 473 | 500..=599 => SourceError::unavailable(message),
                _ => SourceError::other(message),
            }
        }
    }
}

fn default_message(status: u16) -> &'static str {
    match status {
        404 => "nothing at this path (no such secret, role or mount)",
        403 => "permission denied",
        503 => "Vault is sealed or unavailable",
        429 => "rate limited",
        _ => "(no message)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, errors: &[&str]) -> SourceError {
        classify(
            "read of database/creds/app",
            CallError::Status {
                status,
                errors: errors.iter().map(|e| (*e).to_owned()).collect(),
                metadata: None,
            },
        )
    }

    #[test]
    fn statuses_by_kind() {
        let sealed = status(503, &["Vault is sealed"]);
        assert!(sealed.is_unavailable());
        assert_eq!(
            sealed.to_string(),
            "secret store unavailable: read of database/creds/app failed: HTTP 503: Vault is sealed"
        );
        assert!(status(500, &[]).is_unavailable());
        assert!(status(429, &[]).is_unavailable());
        assert!(status(473, &[]).is_unavailable());
        assert!(status(403, &["permission denied"]).is_denied());
        assert!(status(401, &[]).is_denied());
        let missing = status(404, &[]);
        assert!(!missing.is_denied() && !missing.is_unavailable() && !missing.is_malformed());
        assert!(
            missing.to_string().contains("nothing at this path"),
            "{missing}"
        );
        let role = status(400, &["unknown role: app"]);
        assert!(
            role.to_string().ends_with("HTTP 400: unknown role: app"),
            "{role}"
        );
        assert!(classify("x", CallError::Body).is_unavailable());
    }
}
