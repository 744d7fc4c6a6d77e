//! The thin HTTP client: one JSON call to Vault's `/v1/` API, the token in a sensitive header.

use std::fmt;

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// What one call answered, when it did not succeed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No HTTP answer: connection refused or reset, DNS, TLS, a timeout.
    Transport(reqwest::Error),
    /// An HTTP answer outside 2xx, with Vault's `errors` (never a secret) and, for a KV v2 read
    /// of a deleted version (a 404 with a body), that version's `metadata`.
    Status {
        status: u16,
        errors: Vec<String>,
        metadata: Option<Value>,
    },
    /// A 2xx answer whose body is not JSON. Its content is never reported: it may hold a secret.
    Body,
}

impl CallError {
    /// Whether Vault answered with this status and one of its messages contains `needle`.
    pub(crate) fn says(&self, status: u16, needle: &str) -> bool {
        matches!(self, CallError::Status { status: s, errors, .. } if *s == status && errors.iter().any(|e| e.contains(needle)))
    }
}

/// The Vault API client: the server's address, an optional namespace, and a `reqwest::Client`.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    address: String,
    namespace: Option<String>,
}

impl Client {
    pub(crate) fn new(http: reqwest::Client, address: &str, namespace: Option<String>) -> Self {
        Self {
            http,
            address: address.trim_end_matches('/').to_owned(),
            namespace,
        }
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// `method /v1/<path>` with the token (if any) and a JSON body (if any); the answer's JSON
    /// (`Value::Null` for an empty body, as `204 No Content` has).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&SecretString>,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let url = format!("{}/v1/{}", self.address, path);
        let mut headers = HeaderMap::new();
        headers.insert("X-Vault-Request", HeaderValue::from_static("true"));
        if let Some(token) = token {
            let mut value =
                HeaderValue::from_str(token.expose_secret()).map_err(|_| CallError::Status {
                    status: 0,
                    errors: vec![
                        "the Vault token holds characters not allowed in an HTTP header".into(),
                    ],
                    metadata: None,
                })?;
            value.set_sensitive(true);
            headers.insert("X-Vault-Token", value);
        }
        if let Some(value) = self
            .namespace
            .as_deref()
            .and_then(|ns| HeaderValue::from_str(ns).ok())
        {
            headers.insert("X-Vault-Namespace", value);
        }
        let mut request = self.http.request(method, url).headers(headers);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(CallError::Transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(CallError::Transport)?;
        if status.is_success() {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|_| CallError::Body);
        }
        let (errors, metadata) = errors_of(&bytes);
        Err(CallError::Status {
            status: status.as_u16(),
            errors,
            metadata,
        })
    }
}

/// Vault's `{"errors": [...]}` and a KV v2 answer's `data.metadata`; nothing else of a body.
fn errors_of(bytes: &[u8]) -> (Vec<String>, Option<Value>) {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
        #[serde(default)]
        data: Option<Data>,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        #[serde(default)]
        metadata: Option<Value>,
    }
    match serde_json::from_slice::<Errors>(bytes) {
        Ok(e) => (e.errors, e.data.and_then(|d| d.metadata)),
        Err(_) => (Vec::new(), None),
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// `segment` percent-encoded for a URL path (unreserved characters kept).
pub(crate) fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `/`-separated path with each segment encoded; empty segments dropped.
pub(crate) fn encode_path(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(encode_path("/secret//app/db/"), "secret/app/db");
        assert_eq!(encode_path("a b/c?d"), "a%20b/c%3Fd");
        assert_eq!(encode_segment("v-1_x.y~"), "v-1_x.y~");
    }

    #[test]
    fn errors_are_read_only_from_vaults_shape() {
        let (errors, metadata) = errors_of(br#"{"errors":["Vault is sealed"]}"#);
        assert_eq!(errors, ["Vault is sealed"]);
        assert!(metadata.is_none());
        assert!(errors_of(b"<html>password=x</html>").0.is_empty());
        let (_, metadata) = errors_of(
            br#"{"errors":[],"data":{"data":null,"metadata":{"version":1,"deletion_time":"x"}}}"#,
        );
        assert_eq!(metadata.unwrap()["version"], 1);
    }
}
