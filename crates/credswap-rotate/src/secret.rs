//! [`SecretValue`]: the whole JSON value of one version of a database secret, as AWS's
//! rotation templates define it, kept field for field so the rotation can write it back.
//!
//! ```json
//! {"engine": "postgres", "host": "db.example", "port": 5432, "dbname": "app",
//!  "username": "app", "password": "...", "masterarn": "arn:aws:secretsmanager:..."}
//! ```
//!
//! Read by the parser every credswap source shares
//! ([`credswap_core::database_secret::parse_json`]), so the rotation and the applications
//! accept the same secrets: `username`, `password` and (here) `host` are required; `port`
//! (number or string, default 5432), `dbname` (default `postgres`), `engine` (PostgreSQL when
//! present) and `masterarn` are read when present; every other field is kept as it is in the
//! pending value.

use std::fmt;
use std::time::Duration;

use credswap_core::database_secret;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::Error;

/// The value of one version of a database secret in Secrets Manager (its `SecretString`),
/// parsed, with every field kept: the rotation reads the `AWSCURRENT` value and writes the
/// `AWSPENDING` one as the same object with another login ([`with_login`](Self::with_login)).
///
/// Not [`credswap_core::database_secret::DatabaseSecret`], which is what a source reads for an
/// application to connect with (a `Credential` with its version and times, and the known
/// `SecretDetails`; other fields dropped): a `SecretValue` is what the rotation rewrites, so
/// it keeps every field, requires `host` and applies the templates' defaults (port 5432, dbname
/// `postgres`). Both are read by the same parser.
///
/// `Debug` never prints the password (nor any field's value but the username, host, port,
/// dbname, engine and masterarn).
#[derive(Clone)]
pub struct SecretValue {
    /// Every field of the JSON object, as it was (the password included).
    fields: Map<String, Value>,
    username: String,
    password: SecretString,
    host: String,
    port: u16,
    dbname: Option<String>,
}

impl SecretValue {
    /// Parses a secret's value. `what` names it in errors (for instance
    /// `the AWSCURRENT value of secret app/db`); errors never quote the value.
    ///
    /// # Errors
    ///
    /// [`Error::is_malformed`]: not JSON, not an object, `username`/`password`/`host` missing
    /// or not strings, `port` not a port number, `engine` not PostgreSQL.
    pub fn parse(value: &str, what: &str) -> Result<SecretValue, Error> {
        SecretValue::parse_inner(value, what, true)
    }

    /// Parses a master secret: only `username` and `password` are required (an RDS-managed
    /// master secret has nothing else); it is used against the database of the secret being
    /// rotated.
    pub(crate) fn parse_login(value: &str, what: &str) -> Result<SecretValue, Error> {
        SecretValue::parse_inner(value, what, false)
    }

    fn parse_inner(value: &str, what: &str, host_required: bool) -> Result<SecretValue, Error> {
        // The fields, the engine check and the wording are the ones every source uses; the
        // rotation adds that the host is required and keeps every field for the pending value.
        let (credential, details) = database_secret::parse_json(value, None)
            .map_err(|e| Error::malformed(format!("{what}: {}", e.message())))?
            .into_parts();
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(value) else {
            // parse_json read the same text as a JSON object.
            return Err(Error::malformed(format!("{what}: not a JSON object")));
        };
        let host = details.host().filter(|h| !h.is_empty());
        let host = match host {
            Some(host) => host.to_owned(),
            None if host_required => {
                return Err(Error::malformed(format!(
                    "{what}: the secret JSON has no \"host\" field (the rotation connects to it)"
                )));
            }
            None => String::new(),
        };
        Ok(SecretValue {
            username: credential.username().to_owned(),
            password: credential.password().clone(),
            host,
            port: details.port().unwrap_or(5432),
            dbname: details
                .dbname()
                .filter(|d| !d.is_empty())
                .map(str::to_owned),
            fields,
        })
    }

    /// The user.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password.
    pub fn password(&self) -> &SecretString {
        &self.password
    }

    /// The host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (5432 when the secret has none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database (`postgres` when the secret has none, as AWS's templates default).
    pub fn dbname(&self) -> &str {
        self.dbname.as_deref().unwrap_or("postgres")
    }

    /// The `masterarn` field: the secret holding the credential that may create roles and
    /// change passwords (alternating users). Named as
    /// [`SecretDetails::masterarn`](credswap_core::database_secret::SecretDetails::masterarn).
    pub fn masterarn(&self) -> Option<&str> {
        self.fields
            .get("masterarn")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The login as a [`credswap_core::Credential`] (for a credswap provider or a check).
    pub fn credential(&self) -> credswap_core::Credential {
        credswap_core::Credential::new(self.username.clone(), self.password.clone())
    }

    /// The same secret with another username and password; every other field is kept.
    pub fn with_login(&self, username: &str, password: SecretString) -> SecretValue {
        let mut fields = self.fields.clone();
        fields.insert("username".to_owned(), Value::String(username.to_owned()));
        fields.insert(
            "password".to_owned(),
            Value::String(password.expose_secret().to_owned()),
        );
        SecretValue {
            fields,
            username: username.to_owned(),
            password,
            host: self.host.clone(),
            port: self.port,
            dbname: self.dbname.clone(),
        }
    }

    /// The same secret with the host, port and dbname of `other` (the master credential is
    /// used against the database of the secret being rotated).
    pub(crate) fn at_database_of(&self, other: &SecretValue) -> SecretValue {
        let mut secret = self.clone();
        secret.host = other.host.clone();
        secret.port = other.port;
        secret.dbname = other.dbname.clone();
        secret
    }

    /// The JSON text to store (holds the password).
    pub(crate) fn to_json(&self) -> SecretString {
        SecretString::from(Value::Object(self.fields.clone()).to_string())
    }

    /// A driver config for this login.
    pub(crate) fn config(&self, connect_timeout: Duration) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .dbname(self.dbname())
            .user(&self.username)
            .password(self.password.expose_secret())
            .application_name("credswap-rotate")
            .connect_timeout(connect_timeout);
        config
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretValue")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("engine", &self.fields.get("engine").and_then(Value::as_str))
            .field("masterarn", &self.masterarn())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = r#"{"engine":"postgres","host":"db","port":"6432","dbname":"app",
        "username":"app","password":"hunter2-xyz","masterarn":"arn:master","extra":[1,2]}"#;

    #[test]
    fn parses_the_aws_layout_and_keeps_other_fields() {
        let secret = SecretValue::parse(SECRET, "test").unwrap();
        assert_eq!(secret.username(), "app");
        assert_eq!(secret.port(), 6432);
        assert_eq!(secret.dbname(), "app");
        assert_eq!(secret.masterarn(), Some("arn:master"));
        let pending = secret.with_login("app_clone", SecretString::from("new-pw".to_owned()));
        let json: Value = serde_json::from_str(pending.to_json().expose_secret()).unwrap();
        assert_eq!(json["username"], "app_clone");
        assert_eq!(json["password"], "new-pw");
        assert_eq!(json["extra"], serde_json::json!([1, 2]));
        assert_eq!(json["masterarn"], "arn:master");
        assert_eq!(json["port"], "6432");
        // The engines the applications' sources accept, in any case.
        let secret = SecretValue::parse(&SECRET.replace("\"postgres\"", "\"PostgreSQL\""), "test");
        assert!(secret.is_ok(), "{secret:?}");
        let credential = pending.credential();
        assert_eq!(credential.username(), "app_clone");
        assert_eq!(credential.password().expose_secret(), "new-pw");
    }

    #[test]
    fn debug_redacts_the_password() {
        let secret = SecretValue::parse(SECRET, "test").unwrap();
        let text = format!("{secret:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("[redacted]"));
    }

    #[test]
    fn malformed_values_are_named_without_quoting_them() {
        for value in [
            "hunter2-plain-text",
            r#""hunter2-json-string""#,
            r#"{"username":"app","password":"hunter2","host":"db","engine":"mysql"}"#,
            r#"{"username":"app","password":["hunter2"],"host":"db"}"#,
            r#"{"username":"app","password":"hunter2"}"#,
            r#"{"username":"app","password":"hunter2","host":"db","port":"hunter2"}"#,
            r#"{"username":"app","password":"hunter2","host":"db","port":99999}"#,
            r#"{"username":"app","password":"hunter2", "#,
            r#"{"username":"app","password":"hunter2","host":""}"#,
            r#"{"username":"","password":"hunter2","host":"db"}"#,
        ] {
            let err = SecretValue::parse(value, "the AWSCURRENT value of secret s").unwrap_err();
            assert!(err.is_malformed(), "{err:?}");
            let text = format!("{err} {err:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("secret s"), "{text}");
        }
    }
}
