//! What a file or a variable holds: the RDS/Aurora-style JSON (the shape `credswap-aws` reads),
//! a plain password, and the credential's version (a keyed content hash).
//!
//! Every message names where the value came from (`file /run/secrets/db/password`, `environment
//! variable PGPASSWORD`) and the field, never a value.

use std::fmt;
use std::sync::OnceLock;

use credswap_core::{Credential, SourceError};
use secrecy::SecretString;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The engines accepted in the JSON's `engine` field (an absent `engine` is accepted too); the
/// same list as `credswap_aws::POSTGRES_ENGINES`.
pub const POSTGRES_ENGINES: &[&str] = &["postgres", "postgresql", "aurora-postgresql"];

/// The non-secret fields next to the login, for building connect options.
///
/// From the JSON's `engine`, `host`, `port` and `dbname` fields, or from a directory's `host`,
/// `port` and `dbname` files (the keys a CloudNativePG or Crunchy secret carries). Each is
/// `None` when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretDetails {
    pub(crate) engine: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) dbname: Option<String>,
}

impl SecretDetails {
    /// `engine`: `postgres` or `aurora-postgresql` (others are refused as malformed).
    pub fn engine(&self) -> Option<&str> {
        self.engine.as_deref()
    }

    /// `host`: the database endpoint.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// `port` (a JSON number, or a string of digits as some tools write it).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `dbname`: the database to connect to.
    pub fn dbname(&self) -> Option<&str> {
        self.dbname.as_deref()
    }
}

/// One read of a file source or an environment source: the [`Credential`] (with its version
/// and, for files, its modification time as `issued_at`) and its [`SecretDetails`].
///
/// `Debug` prints the credential with its password redacted.
#[derive(Clone)]
pub struct DatabaseSecret {
    pub(crate) credential: Credential,
    pub(crate) details: SecretDetails,
}

impl DatabaseSecret {
    /// The login, with its version and issue time.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The non-secret fields (host, port, dbname, engine).
    pub fn details(&self) -> &SecretDetails {
        &self.details
    }

    /// Both parts, owned.
    pub fn into_parts(self) -> (Credential, SecretDetails) {
        (self.credential, self.details)
    }
}

impl fmt::Debug for DatabaseSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSecret")
            .field("credential", &self.credential)
            .field("details", &self.details)
            .finish()
    }
}

/// A malformed error about `origin` ("file /x/y", "environment variable X"): a sentence of
/// its own after a colon.
pub(crate) fn malformed(origin: &str, message: impl fmt::Display) -> SourceError {
    SourceError::malformed(format!("{origin}: {message}"))
}

/// A malformed error saying what `origin` is: "file /x/y is empty".
pub(crate) fn malformed_is(origin: &str, predicate: impl fmt::Display) -> SourceError {
    SourceError::malformed(format!("{origin} {predicate}"))
}

/// Bytes as UTF-8 text, or a malformed error that says which file or variable is not.
pub(crate) fn utf8(origin: &str, bytes: Vec<u8>) -> Result<String, SourceError> {
    String::from_utf8(bytes).map_err(|e| {
        malformed_is(
            origin,
            format_args!(
                "is not valid UTF-8 (at byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Drops one trailing line ending (`\n` or `\r\n`): what `echo` and most editors leave.
pub(crate) fn strip_newline(text: &mut String) {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
}

/// Whether a value read from a file or variable is JSON (its first non-blank character is `{`).
pub(crate) fn looks_like_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// Parses the RDS/Aurora-style JSON object: string fields `username` (or `configured_username`)
/// and `password`; optional `engine` (PostgreSQL only), `host`, `port`, `dbname`; other fields
/// are ignored. The wording follows `credswap-aws`; messages start with `origin`.
pub(crate) fn parse_json(
    origin: &str,
    text: &str,
    configured_username: Option<&str>,
) -> Result<(Credential, SecretDetails), SourceError> {
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(malformed(origin, "the secret JSON is not an object")),
        // The position only: serde_json's message could quote part of the input.
        Err(e) => {
            return Err(malformed(
                origin,
                format_args!(
                    "the secret is not valid JSON ({:?} error at line {}, column {}); a \
                     half-written secret is never used",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            ));
        }
    };
    parse_object(origin, &object, configured_username)
}

fn parse_object(
    origin: &str,
    object: &Map<String, Value>,
    configured_username: Option<&str>,
) -> Result<(Credential, SecretDetails), SourceError> {
    let engine = optional_string(origin, object, "engine")?;
    if let Some(engine) = &engine
        && !POSTGRES_ENGINES
            .iter()
            .any(|e| e.eq_ignore_ascii_case(engine.trim()))
    {
        return Err(malformed(
            origin,
            "field \"engine\" names an engine other than PostgreSQL (expected \"postgres\" or \
             \"aurora-postgresql\")",
        ));
    }
    let username = match optional_string(origin, object, "username")? {
        Some(username) => username,
        None => configured_username
            .map(str::to_owned)
            .ok_or_else(|| malformed(origin, "the secret JSON has no \"username\" field"))?,
    };
    if username.is_empty() {
        return Err(malformed(origin, "field \"username\" is empty"));
    }
    let password = match object.get("password") {
        Some(Value::String(p)) if p.is_empty() => {
            return Err(malformed(origin, "field \"password\" is empty"));
        }
        Some(Value::String(p)) => SecretString::from(p.clone()),
        None | Some(Value::Null) => {
            return Err(malformed(
                origin,
                "the secret JSON has no \"password\" field",
            ));
        }
        Some(other) => return Err(wrong_type(origin, "password", "a string", other)),
    };
    let port = match object.get("port") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| malformed(origin, "field \"port\" is not a TCP port"))?,
        ),
        Some(Value::String(s)) => Some(parse_port(origin, "field \"port\"", s)?),
        Some(other) => return Err(wrong_type(origin, "port", "a number", other)),
    };
    let details = SecretDetails {
        engine,
        host: optional_string(origin, object, "host")?,
        port,
        dbname: optional_string(origin, object, "dbname")?,
    };
    Ok((Credential::new(username, password), details))
}

/// A port written as text (a JSON string, a `port` file).
pub(crate) fn parse_port(origin: &str, what: &str, text: &str) -> Result<u16, SourceError> {
    text.trim().parse::<u16>().map_err(|_| {
        if what.is_empty() {
            malformed_is(origin, "is not a TCP port")
        } else {
            malformed(origin, format_args!("{what} is not a TCP port"))
        }
    })
}

/// A string field that may be absent (or `null`).
fn optional_string(
    origin: &str,
    object: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, SourceError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(origin, field, "a string", other)),
    }
}

/// Names the field, the expected and the found JSON type; never the value.
fn wrong_type(origin: &str, field: &str, expected: &str, found: &Value) -> SourceError {
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    malformed(
        origin,
        format_args!("field \"{field}\" must be {expected}, found {found}"),
    )
}

/// A keyed SHA-256 over what was read, for change detection and the credential's version.
///
/// The key is random per process, so the hash says nothing about the password even when the
/// password is weak (an unkeyed hash of a short password can be brute-forced from a log line);
/// within one process equal contents give equal fingerprints.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Hashes the parts in order; each is length-prefixed, so `("ab", "c")` and `("a", "bc")`
    /// differ, and `None` differs from an empty part.
    pub(crate) fn of<'a>(parts: impl IntoIterator<Item = Option<&'a [u8]>>) -> Self {
        static KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let key = KEY.get_or_init(rand::random);
        let mut hasher = Sha256::new();
        hasher.update(key);
        for part in parts {
            match part {
                None => hasher.update([0u8]),
                Some(bytes) => {
                    hasher.update([1u8]);
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(bytes);
                }
            }
        }
        hasher.update(key);
        Fingerprint(hasher.finalize().into())
    }

    /// The version string: `content-` and the first 8 bytes in hex.
    pub(crate) fn version(&self) -> String {
        let mut version = String::from("content-");
        for byte in &self.0[..8] {
            version.push_str(&format!("{byte:02x}"));
        }
        version
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.version())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const PW: &str = "s3cr3t-Value-Never-Printed";
    const ORIGIN: &str = "file /run/secrets/db.json";

    fn malformed_message(text: &str, username: Option<&str>) -> String {
        let err = parse_json(ORIGIN, text, username).expect_err("must not parse");
        assert!(err.is_malformed(), "{err:?}");
        let printed = format!("{err} {err:?}");
        assert!(!printed.contains(PW), "{printed}");
        assert!(printed.contains(ORIGIN), "the origin is named: {printed}");
        printed
    }

    #[test]
    fn rds_json_with_details() {
        let text = format!(
            r#"{{"engine":"postgres","host":"db.example","username":"app","password":"{PW}",
                "dbname":"orders","port":5432,"masterarn":"arn:x","extra":[1]}}"#
        );
        let (c, d) = parse_json(ORIGIN, &text, None).unwrap();
        assert_eq!(c.username(), "app");
        assert_eq!(c.password().expose_secret(), PW);
        assert_eq!(
            (d.engine(), d.host(), d.port(), d.dbname()),
            (
                Some("postgres"),
                Some("db.example"),
                Some(5432),
                Some("orders")
            )
        );
        let (_, d) = parse_json(
            ORIGIN,
            &format!(
                r#"{{"engine":"aurora-postgresql","username":"u","password":"{PW}","port":"6432"}}"#
            ),
            None,
        )
        .unwrap();
        assert_eq!(d.port(), Some(6432));
    }

    #[test]
    fn configured_username_fills_in() {
        let (c, _) = parse_json(ORIGIN, &format!(r#"{{"password":"{PW}"}}"#), Some("cfg")).unwrap();
        assert_eq!(c.username(), "cfg");
        let (c, _) = parse_json(
            ORIGIN,
            &format!(r#"{{"username":"json","password":"{PW}"}}"#),
            Some("cfg"),
        )
        .unwrap();
        assert_eq!(c.username(), "json", "the secret's own username wins");
    }

    #[test]
    fn half_written_and_malformed_json_names_the_field_never_the_value() {
        let full = format!(r#"{{"username":"u","password":"{PW}"}}"#);
        for cut in 1..full.len() - 1 {
            let m = malformed_message(&full[..cut], None);
            assert!(
                m.contains("not valid JSON") || m.contains("\"password\""),
                "{m}"
            );
        }
        let m = malformed_message("", None);
        assert!(m.contains("not valid JSON"), "{m}");
        let m = malformed_message(&format!(r#"{{"username":"u","pass":"{PW}"}}"#), None);
        assert!(m.contains("no \"password\" field"), "{m}");
        let m = malformed_message(&format!(r#"{{"password":"{PW}"}}"#), None);
        assert!(m.contains("no \"username\" field"), "{m}");
        let m = malformed_message(r#"{"username":"u","password":12345}"#, None);
        assert!(m.contains("\"password\" must be a string, found a number"));
        assert!(!m.contains("12345"), "{m}");
        let m = malformed_message(
            &format!(r#"{{"engine":"mysql","username":"u","password":"{PW}"}}"#),
            None,
        );
        assert!(m.contains("\"engine\"") && !m.contains("mysql"), "{m}");
        let m = malformed_message(
            &format!(r#"{{"username":"u","password":"{PW}","port":70000}}"#),
            None,
        );
        assert!(m.contains("\"port\""), "{m}");
        let m = malformed_message(r#"{"username":"","password":"x"}"#, None);
        assert!(m.contains("\"username\" is empty"), "{m}");
        let m = malformed_message(r#"{"username":"u","password":""}"#, None);
        assert!(m.contains("\"password\" is empty"), "{m}");
        let m = malformed_message(&format!(r#"["{PW}"]"#), None);
        assert!(m.contains("not an object"), "{m}");
    }

    #[test]
    fn fingerprints_are_keyed_and_length_prefixed() {
        let a = Fingerprint::of([Some(&b"ab"[..]), Some(&b"c"[..])]);
        let b = Fingerprint::of([Some(&b"a"[..]), Some(&b"bc"[..])]);
        assert!(a != b);
        assert!(a == Fingerprint::of([Some(&b"ab"[..]), Some(&b"c"[..])]));
        assert!(Fingerprint::of([None]) != Fingerprint::of([Some(&b""[..])]));
        // Not the unkeyed SHA-256 of the password.
        let unkeyed: [u8; 32] = Sha256::digest(PW.as_bytes()).into();
        assert!(Fingerprint::of([Some(PW.as_bytes())]).0 != unkeyed);
        let v = a.version();
        assert!(
            v.starts_with("content-") && v.len() == "content-".len() + 16,
            "{v}"
        );
    }

    #[test]
    fn newline_stripping_and_utf8() {
        for (input, want) in [
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw\n\n", "pw\n"),
            ("pw ", "pw "),
        ] {
            let mut s = input.to_owned();
            strip_newline(&mut s);
            assert_eq!(s, want);
        }
        let err = utf8("file x", vec![b'a', 0xff]).unwrap_err();
        assert!(
            err.is_malformed() && err.message().contains("UTF-8"),
            "{err}"
        );
    }
}
