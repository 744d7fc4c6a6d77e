//! Database static roles: `GET <mount>/static-creds/<role>`, one user whose password Vault
//! rotates.

use std::time::{Duration, SystemTime};

use credswap_core::{Credential, SourceError};
use secrecy::SecretString;
use serde_json::Value;

use super::{Inner, login_of, parse_time};

impl Inner {
    pub(super) async fn fetch_static(
        &self,
        token: &SecretString,
    ) -> Result<Credential, SourceError> {
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
}
