//! [`DbSecret`]: the JSON value of a database secret, as AWS's rotation templates define it.
//!
//! ```json
//! {"engine": "postgres", "host": "db.example", "port": 5432, "dbname": "app",
//!  "username": "app", "password": "...", "masterarn": "arn:aws:secretsmanager:..."}
//! ```
//!
//! `username`, `password` and `host` are required; `port` (number or string, default 5432),
//! `dbname` (default `postgres`), `engine` (`postgres` or `aurora-postgresql` when present) and
//! `masterarn` are read when present; every other field is kept as it is in the pending value.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::Error;

/// The engines the rotation accepts in a secret's `engine` field.
const ENGINES: [&str; 2] = ["postgres", "aurora-postgresql"];

/// A parsed database secret. `Debug` never prints the password (nor any field's value but
/// the username, host, port, dbname and engine).
#[derive(Clone)]
pub struct DbSecret {
    /// Every field of the JSON object, as it was (the password included).
    fields: Map<String, Value>,
    username: String,
    password: SecretString,
    host: String,
    port: u16,
    dbname: Option<String>,
}

impl DbSecret {
    /// Parses a secret's value. `what` names it in errors (for instance
    /// `the AWSCURRENT value of secret app/db`); errors never quote the value.
    ///
    /// # Errors
    ///
    /// [`Error::is_malformed`]: not JSON, not an object, `username`/`password`/`host` missing
    /// or not strings, `port` not a port number, `engine` not PostgreSQL.
    pub fn parse(value: &str, what: &str) -> Result<DbSecret, Error> {
        DbSecret::parse_inner(value, what, true)
    }

    /// Parses a master secret: only `username` and `password` are required (an RDS-managed
    /// master secret has nothing else); it is used against the database of the secret being
    /// rotated.
    pub(crate) fn parse_login(value: &str, what: &str) -> Result<DbSecret, Error> {
        DbSecret::parse_inner(value, what, false)
    }

    fn parse_inner(value: &str, what: &str, host_required: bool) -> Result<DbSecret, Error> {
        // Parsed as a `Value` first: a typed deserializer's error would quote the value.
        let value: Value = serde_json::from_str(value).map_err(|e| {
            Error::malformed(format!(
                "{what} is not valid JSON ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let Value::Object(fields) = value else {
            return Err(Error::malformed(format!(
                "{what} is not a JSON object (the rotation needs {{\"username\", \"password\", \
                 \"host\", ...}})"
            )));
        };
        let string = |key: &str| -> Result<Option<String>, Error> {
            match fields.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(Error::malformed(format!(
                    "{what}: field \"{key}\" is {}, not a string",
                    json_type(other)
                ))),
            }
        };
        let required = |key: &str| -> Result<String, Error> {
            string(key)?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Error::malformed(format!("{what}: field \"{key}\" is missing")))
        };
        let username = required("username")?;
        let password = SecretString::from(required("password")?);
        let host = if host_required {
            required("host")?
        } else {
            string("host")?.unwrap_or_default()
        };
        let port = match fields.get("port") {
            None | Some(Value::Null) => 5432,
            Some(Value::Number(n)) => {
                n.as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| {
                        Error::malformed(format!("{what}: field \"port\" is not a port number"))
                    })?
            }
            Some(Value::String(s)) => s.trim().parse().map_err(|_| {
                Error::malformed(format!("{what}: field \"port\" is not a port number"))
            })?,
            Some(other) => {
                return Err(Error::malformed(format!(
                    "{what}: field \"port\" is {}, not a number",
                    json_type(other)
                )));
            }
        };
        if let Some(engine) = string("engine")?
            && !ENGINES.contains(&engine.as_str())
        {
            return Err(Error::malformed(format!(
                "{what}: engine {engine:?} is not PostgreSQL (expected one of {ENGINES:?})"
            )));
        }
        let dbname = string("dbname")?.filter(|s| !s.is_empty());
        Ok(DbSecret {
            fields,
            username,
            password,
            host,
            port,
            dbname,
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
    /// change passwords (alternating users).
    pub fn master_arn(&self) -> Option<&str> {
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
    pub fn with_login(&self, username: &str, password: SecretString) -> DbSecret {
        let mut fields = self.fields.clone();
        fields.insert("username".to_owned(), Value::String(username.to_owned()));
        fields.insert(
            "password".to_owned(),
            Value::String(password.expose_secret().to_owned()),
        );
        DbSecret {
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
    pub(crate) fn at_database_of(&self, other: &DbSecret) -> DbSecret {
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

/// The name of a JSON value's type, for errors that must not quote the value.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl fmt::Debug for DbSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSecret")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("engine", &self.fields.get("engine").and_then(Value::as_str))
            .field("masterarn", &self.master_arn())
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
        let secret = DbSecret::parse(SECRET, "test").unwrap();
        assert_eq!(secret.username(), "app");
        assert_eq!(secret.port(), 6432);
        assert_eq!(secret.dbname(), "app");
        assert_eq!(secret.master_arn(), Some("arn:master"));
        let pending = secret.with_login("app_clone", SecretString::from("new-pw".to_owned()));
        let json: Value = serde_json::from_str(pending.to_json().expose_secret()).unwrap();
        assert_eq!(json["username"], "app_clone");
        assert_eq!(json["password"], "new-pw");
        assert_eq!(json["extra"], serde_json::json!([1, 2]));
        assert_eq!(json["masterarn"], "arn:master");
        assert_eq!(json["port"], "6432");
        let credential = pending.credential();
        assert_eq!(credential.username(), "app_clone");
        assert_eq!(credential.password().expose_secret(), "new-pw");
    }

    #[test]
    fn debug_redacts_the_password() {
        let secret = DbSecret::parse(SECRET, "test").unwrap();
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
        ] {
            let err = DbSecret::parse(value, "the AWSCURRENT value of secret s").unwrap_err();
            assert!(err.is_malformed(), "{err:?}");
            let text = format!("{err} {err:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("secret s"), "{text}");
        }
    }
}
