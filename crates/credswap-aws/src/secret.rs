//! Parsing a `SecretString` into a credential: the JSON that AWS's RDS/Aurora rotation templates
//! write, or a plain password.

use std::fmt;

use credswap_core::{Credential, SourceError};
use secrecy::SecretString;
use serde_json::{Map, Value};

/// The engines accepted in the `engine` field (an absent `engine` is accepted too).
pub const POSTGRES_ENGINES: &[&str] = &["postgres", "postgresql", "aurora-postgresql"];

/// The non-secret fields of a database secret, for building connect options.
///
/// AWS's rotation templates for RDS and Aurora keep `engine`, `host`, `port`, `dbname` (and, for
/// the alternating-users strategy, `masterarn`) next to `username` and `password`. Each is `None`
/// when the secret does not have it (always, for a plain-string secret).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretDetails {
    engine: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    dbname: Option<String>,
    masterarn: Option<String>,
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

    /// `masterarn`: the ARN of the superuser secret the alternating-users rotation uses.
    pub fn masterarn(&self) -> Option<&str> {
        self.masterarn.as_deref()
    }
}

/// A parsed secret version: the [`Credential`] (with the store's version and dates) and its
/// [`SecretDetails`].
///
/// `Debug` prints the credential with its password redacted.
#[derive(Clone)]
pub struct DatabaseSecret {
    pub(crate) credential: Credential,
    pub(crate) details: SecretDetails,
}

impl DatabaseSecret {
    /// The login, with the version id, creation date and rotation schedule the store gave.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The non-secret fields (host, port, dbname, engine, masterarn).
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

/// Parses a `SecretString`.
///
/// A string whose first non-blank character is `{` must be a JSON object with string fields
/// `username` (or a configured `username`) and `password`; anything else is a plain password,
/// which needs the configured `username`. Error messages name the field, never a value.
pub(crate) fn parse(
    secret_string: &str,
    configured_username: Option<&str>,
) -> Result<(Credential, SecretDetails), SourceError> {
    if !secret_string.trim_start().starts_with('{') {
        let username = configured_username.ok_or_else(|| {
            SourceError::malformed(
                "the secret is a plain string, not a JSON object; set the username with \
                 `SecretsManagerSource::builder(..).username(..)` to use it as a password",
            )
        })?;
        if secret_string.is_empty() {
            return Err(SourceError::malformed("the secret string is empty"));
        }
        let password = SecretString::from(secret_string.to_owned());
        return Ok((
            Credential::new(username, password),
            SecretDetails::default(),
        ));
    }
    let object = match serde_json::from_str::<Value>(secret_string) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(SourceError::malformed("the secret JSON is not an object")),
        // The position only: serde_json's message could quote part of the input.
        Err(e) => {
            return Err(SourceError::malformed(format!(
                "the secret string starts with '{{' but is not valid JSON ({:?} error at line {}, \
                 column {})",
                e.classify(),
                e.line(),
                e.column()
            )));
        }
    };
    parse_object(&object, configured_username)
}

fn parse_object(
    object: &Map<String, Value>,
    configured_username: Option<&str>,
) -> Result<(Credential, SecretDetails), SourceError> {
    let engine = optional_string(object, "engine")?;
    if let Some(engine) = &engine
        && !POSTGRES_ENGINES
            .iter()
            .any(|e| e.eq_ignore_ascii_case(engine.trim()))
    {
        return Err(SourceError::malformed(
            "field \"engine\" names an engine other than PostgreSQL (expected \"postgres\" or \
             \"aurora-postgresql\")",
        ));
    }
    let username = match optional_string(object, "username")? {
        Some(username) => username,
        None => configured_username
            .map(str::to_owned)
            .ok_or_else(|| SourceError::malformed("the secret JSON has no \"username\" field"))?,
    };
    if username.is_empty() {
        return Err(SourceError::malformed("field \"username\" is empty"));
    }
    let password = match object.get("password") {
        Some(Value::String(p)) if p.is_empty() => {
            return Err(SourceError::malformed("field \"password\" is empty"));
        }
        Some(Value::String(p)) => SecretString::from(p.clone()),
        None | Some(Value::Null) => {
            return Err(SourceError::malformed(
                "the secret JSON has no \"password\" field",
            ));
        }
        Some(other) => return Err(wrong_type("password", "a string", other)),
    };
    let port = match object.get("port") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| SourceError::malformed("field \"port\" is not a TCP port"))?,
        ),
        Some(Value::String(s)) => Some(
            s.trim()
                .parse::<u16>()
                .map_err(|_| SourceError::malformed("field \"port\" is not a TCP port"))?,
        ),
        Some(other) => return Err(wrong_type("port", "a number", other)),
    };
    let details = SecretDetails {
        engine,
        host: optional_string(object, "host")?,
        port,
        dbname: optional_string(object, "dbname")?,
        masterarn: optional_string(object, "masterarn")?,
    };
    Ok((Credential::new(username, password), details))
}

/// A string field that may be absent (or `null`).
fn optional_string(
    object: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, SourceError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(field, "a string", other)),
    }
}

/// Names the field, the expected and the found JSON type; never the value.
fn wrong_type(field: &str, expected: &str, found: &Value) -> SourceError {
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    SourceError::malformed(format!(
        "field \"{field}\" must be {expected}, found {found}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const PW: &str = "s3cr3t-Value-Never-Printed";

    fn malformed(text: &str, username: Option<&str>) -> String {
        let err = parse(text, username).expect_err("must not parse");
        assert!(err.is_malformed(), "{err:?}");
        let printed = format!("{err} {err:?}");
        assert!(!printed.contains(PW), "{printed}");
        printed
    }

    #[test]
    fn rds_template_json() {
        let text = format!(
            r#"{{"engine":"postgres","host":"db.example","username":"app","password":"{PW}",
                "dbname":"orders","port":5432,"masterarn":"arn:aws:secretsmanager:x","extra":[1]}}"#
        );
        let (credential, details) = parse(&text, None).unwrap();
        assert_eq!(credential.username(), "app");
        assert_eq!(credential.password().expose_secret(), PW);
        assert_eq!(details.engine(), Some("postgres"));
        assert_eq!(details.host(), Some("db.example"));
        assert_eq!(details.port(), Some(5432));
        assert_eq!(details.dbname(), Some("orders"));
        assert_eq!(details.masterarn(), Some("arn:aws:secretsmanager:x"));
    }

    #[test]
    fn minimal_json_aurora_and_string_port() {
        let (c, d) = parse(&format!(r#"{{"username":"u","password":"{PW}"}}"#), None).unwrap();
        assert_eq!(c.username(), "u");
        assert_eq!(d, SecretDetails::default());
        let text = format!(
            r#"{{"engine":"aurora-postgresql","username":"u","password":"{PW}","port":"6432","host":null}}"#
        );
        let (_, d) = parse(&text, None).unwrap();
        assert_eq!(d.port(), Some(6432));
        assert_eq!(d.host(), None);
    }

    #[test]
    fn configured_username_fills_in_and_plain_strings() {
        let (c, _) = parse(&format!(r#"{{"password":"{PW}"}}"#), Some("cfg")).unwrap();
        assert_eq!(c.username(), "cfg");
        let (c, _) = parse(
            &format!(r#"{{"username":"json","password":"{PW}"}}"#),
            Some("cfg"),
        )
        .unwrap();
        assert_eq!(c.username(), "json", "the secret's own username wins");
        let (c, d) = parse(PW, Some("cfg")).unwrap();
        assert_eq!(c.username(), "cfg");
        assert_eq!(c.password().expose_secret(), PW);
        assert_eq!(d, SecretDetails::default());
        assert!(malformed(PW, None).contains("plain string"));
        assert!(malformed("", Some("cfg")).contains("empty"));
    }

    #[test]
    fn malformed_secrets_name_the_field_never_the_value() {
        let m = malformed(&format!(r#"{{"username":"u","password":"{PW}""#), None);
        assert!(m.contains("not valid JSON"), "{m}");
        let m = malformed(&format!(r#"{{"username":"u","pass":"{PW}"}}"#), None);
        assert!(m.contains("\"password\""), "{m}");
        let m = malformed(&format!(r#"{{"password":"{PW}"}}"#), None);
        assert!(m.contains("\"username\""), "{m}");
        let m = malformed(r#"{"username":"u","password":12345}"#, None);
        assert!(
            m.contains("\"password\" must be a string, found a number"),
            "{m}"
        );
        assert!(!m.contains("12345"), "{m}");
        let m = malformed(&format!(r#"{{"username":["{PW}"],"password":"x"}}"#), None);
        assert!(
            m.contains("\"username\" must be a string, found an array"),
            "{m}"
        );
        let m = malformed(
            &format!(r#"{{"engine":"mysql","username":"u","password":"{PW}"}}"#),
            None,
        );
        assert!(m.contains("\"engine\""), "{m}");
        assert!(!m.contains("mysql"), "{m}");
        let m = malformed(
            &format!(r#"{{"username":"u","password":"{PW}","port":70000}}"#),
            None,
        );
        assert!(m.contains("\"port\""), "{m}");
        let m = malformed(
            &format!(r#"{{"username":"u","password":"{PW}","port":true}}"#),
            None,
        );
        assert!(m.contains("\"port\" must be a number"), "{m}");
        let m = malformed(r#"{"username":"","password":"x"}"#, None);
        assert!(m.contains("\"username\" is empty"), "{m}");
        let m = malformed(r#"{"username":"u","password":""}"#, None);
        assert!(m.contains("\"password\" is empty"), "{m}");
        let m = malformed(
            &format!(r#"{{"username":"u","password":"{PW}","host":5}}"#),
            None,
        );
        assert!(m.contains("\"host\" must be a string"), "{m}");
    }

    #[test]
    fn debug_of_a_parsed_secret_redacts_the_password() {
        let (credential, details) =
            parse(&format!(r#"{{"username":"u","password":"{PW}"}}"#), None).unwrap();
        let secret = DatabaseSecret {
            credential,
            details,
        };
        let printed = format!("{secret:?} {secret:#?}");
        assert!(!printed.contains(PW), "{printed}");
        assert!(printed.contains("\"u\""), "{printed}");
    }
}
