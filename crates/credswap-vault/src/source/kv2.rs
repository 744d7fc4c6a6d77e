//! KV v2 reading: `GET <mount>/data/<path>`, the username and password fields of a version.

use credswap_core::{Credential, SourceError};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::Value;

use super::{Inner, Kind, bump, json_type, parse_time};
use crate::client::CallError;
use crate::error::classify;

impl Inner {
    pub(super) async fn fetch_kv2(&self, token: &SecretString) -> Result<Credential, SourceError> {
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
