//! What a database secret holds besides the login, and the JSON shape every source shares.
//!
//! Secret stores keep a database login in one of two shapes: a plain password (the username is
//! configured beside it), or the JSON object AWS's RDS and Aurora rotation templates write,
//! which Kubernetes secrets, Vault KV entries and mounted files copy:
//!
//! ```json
//! {"engine": "postgres", "host": "db.example", "port": 5432, "dbname": "orders",
//!  "username": "app", "password": "…", "masterarn": "arn:aws:secretsmanager:…"}
//! ```
//!
//! A source reads the login into a [`Credential`] and the other fields into [`SecretDetails`];
//! [`DatabaseSecret`] carries both. With the `json` feature, [`parse_json`] reads the object,
//! so that `credswap-aws`, `credswap-file` and any source of your own accept the same fields
//! and refuse the same mistakes with the same words.
//!
//! # Why the messages never quote the input
//!
//! A malformed secret is reported through [`SourceError::malformed`], and that error reaches
//! logs, health endpoints and `credswap check`. The password is in the same text as the
//! mistake, so a message names the field and the JSON type it found, or the line and column of
//! a syntax error, and never a value: not even the value of a field that is not secret, since a
//! mistyped secret often has the password in the wrong field.

use std::fmt;

use crate::Credential;
#[cfg(feature = "json")]
use crate::SourceError;

/// The values of the `engine` field a PostgreSQL secret may carry (compared without case); an
/// absent `engine` is accepted too.
pub const POSTGRES_ENGINES: &[&str] = &["postgres", "postgresql", "aurora-postgresql"];

/// The non-secret fields of a database secret, for building connect options.
///
/// AWS's rotation templates for RDS and Aurora keep `engine`, `host`, `port`, `dbname` (and, for
/// the alternating-users strategy, `masterarn`) next to `username` and `password`; a directory
/// of key files (a Kubernetes secret volume) may have `host`, `port` and `dbname` files. Each is
/// `None` when the secret does not have it (always, for a plain password).
///
/// ```
/// use credswap_core::database_secret::SecretDetails;
///
/// let details = SecretDetails::default().with_host("db.example").with_port(6432);
/// assert_eq!((details.host(), details.port(), details.dbname()), (Some("db.example"), Some(6432), None));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretDetails {
    engine: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    dbname: Option<String>,
    masterarn: Option<String>,
}

impl SecretDetails {
    /// `engine`: `postgres` or `aurora-postgresql` (see [`POSTGRES_ENGINES`]).
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

    /// `masterarn`: the ARN of the superuser secret AWS's alternating-users rotation uses.
    pub fn masterarn(&self) -> Option<&str> {
        self.masterarn.as_deref()
    }

    /// With `engine` set.
    pub fn with_engine(mut self, engine: impl Into<String>) -> Self {
        self.engine = Some(engine.into());
        self
    }

    /// With `host` set.
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// With `port` set.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// With `dbname` set.
    pub fn with_dbname(mut self, dbname: impl Into<String>) -> Self {
        self.dbname = Some(dbname.into());
        self
    }

    /// With `masterarn` set.
    pub fn with_masterarn(mut self, masterarn: impl Into<String>) -> Self {
        self.masterarn = Some(masterarn.into());
        self
    }
}

/// One read of a database secret: the [`Credential`] (with the version, issue time and
/// schedule its source gave) and its [`SecretDetails`].
///
/// `Debug` prints the credential with its password redacted.
#[derive(Clone)]
pub struct DatabaseSecret {
    credential: Credential,
    details: SecretDetails,
}

impl DatabaseSecret {
    /// A secret from its two parts.
    pub fn new(credential: Credential, details: SecretDetails) -> Self {
        Self {
            credential,
            details,
        }
    }

    /// The login, with its version, issue time and rotation schedule.
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

    /// The same secret with its credential changed by `f` (a version, an issue time).
    pub fn map_credential(self, f: impl FnOnce(Credential) -> Credential) -> Self {
        Self {
            credential: f(self.credential),
            details: self.details,
        }
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

/// Whether `text` is meant as JSON: its first non-blank character is `{`. A secret that is
/// not is a plain password.
pub fn looks_like_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// Parses the RDS/Aurora JSON object.
///
/// String fields `username` (else `configured_username`) and `password`, neither empty;
/// optional `engine` (PostgreSQL only, see [`POSTGRES_ENGINES`]), `host`, `port` (a number or a
/// string of digits), `dbname` and `masterarn`; `null` counts as absent and other fields are
/// ignored. Any mistake is [`SourceError::malformed`], with a message that names the field and
/// what was found there, never a value; the caller prefixes where the text came from.
///
/// ```
/// use credswap_core::database_secret::parse_json;
/// use secrecy::ExposeSecret;
///
/// let secret = parse_json(r#"{"username": "app", "password": "pw", "port": "6432"}"#, None)?;
/// assert_eq!(secret.credential().username(), "app");
/// assert_eq!(secret.credential().password().expose_secret(), "pw");
/// assert_eq!(secret.details().port(), Some(6432));
///
/// let err = parse_json(r#"{"username": "app", "password": 1234}"#, None).unwrap_err();
/// assert!(err.is_malformed());
/// assert_eq!(err.message(), "field \"password\" must be a string, found a number");
/// # Ok::<(), credswap_core::SourceError>(())
/// ```
#[cfg(feature = "json")]
pub fn parse_json(
    text: &str,
    configured_username: Option<&str>,
) -> Result<DatabaseSecret, SourceError> {
    use secrecy::SecretString;
    use serde_json::Value;

    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(SourceError::malformed("the secret JSON is not an object")),
        // The position only: serde_json's message could quote part of the input.
        Err(e) => {
            return Err(SourceError::malformed(format!(
                "the secret is not valid JSON ({:?} error at line {}, column {}); a \
                 half-written secret is never used",
                e.classify(),
                e.line(),
                e.column()
            )));
        }
    };
    let string = |field: &str| -> Result<Option<String>, SourceError> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(wrong_type(field, "a string", other)),
        }
    };
    let engine = string("engine")?;
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
    let username = match string("username")? {
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
        host: string("host")?,
        port,
        dbname: string("dbname")?,
        masterarn: string("masterarn")?,
    };
    Ok(DatabaseSecret::new(
        Credential::new(username, password),
        details,
    ))
}

/// Names the field, the expected and the found JSON type; never the value.
#[cfg(feature = "json")]
fn wrong_type(field: &str, expected: &str, found: &serde_json::Value) -> SourceError {
    use serde_json::Value;
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

#[cfg(all(test, feature = "json"))]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const PW: &str = "s3cr3t-Value-Never-Printed";

    fn malformed(text: &str, username: Option<&str>) -> String {
        let err = parse_json(text, username).expect_err("must not parse");
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
        let secret = parse_json(&text, None).unwrap();
        assert_eq!(secret.credential().username(), "app");
        assert_eq!(secret.credential().password().expose_secret(), PW);
        let want = SecretDetails::default()
            .with_engine("postgres")
            .with_host("db.example")
            .with_port(5432)
            .with_dbname("orders")
            .with_masterarn("arn:aws:secretsmanager:x");
        assert_eq!(secret.details(), &want);
    }

    #[test]
    fn minimal_json_aurora_and_string_port() {
        let secret = parse_json(&format!(r#"{{"username":"u","password":"{PW}"}}"#), None).unwrap();
        assert_eq!(secret.credential().username(), "u");
        assert_eq!(secret.details(), &SecretDetails::default());
        let text = format!(
            r#"{{"engine":"Aurora-PostgreSQL","username":"u","password":"{PW}","port":" 6432","host":null}}"#
        );
        let secret = parse_json(&text, None).unwrap();
        assert_eq!(secret.details().port(), Some(6432));
        assert_eq!(secret.details().host(), None);
    }

    #[test]
    fn configured_username_fills_in_but_never_overrides() {
        let secret = parse_json(&format!(r#"{{"password":"{PW}"}}"#), Some("cfg")).unwrap();
        assert_eq!(secret.credential().username(), "cfg");
        let secret = parse_json(
            &format!(r#"{{"username":"json","password":"{PW}"}}"#),
            Some("cfg"),
        )
        .unwrap();
        assert_eq!(secret.credential().username(), "json");
    }

    #[test]
    fn half_written_json_is_refused_at_every_cut() {
        let full = format!(r#"{{"username":"u","password":"{PW}"}}"#);
        for cut in 0..full.len() - 1 {
            let m = malformed(&full[..cut], None);
            assert!(m.contains("not valid JSON"), "{m}");
        }
    }

    #[test]
    fn malformed_secrets_name_the_field_never_the_value() {
        for (text, want) in [
            (
                format!(r#"{{"username":"u","pass":"{PW}"}}"#),
                "no \"password\" field",
            ),
            (format!(r#"{{"password":"{PW}"}}"#), "no \"username\" field"),
            (
                r#"{"username":"u","password":12345}"#.to_owned(),
                "field \"password\" must be a string, found a number",
            ),
            (
                format!(r#"{{"username":["{PW}"],"password":"x"}}"#),
                "field \"username\" must be a string, found an array",
            ),
            (
                format!(r#"{{"engine":"mysql","username":"u","password":"{PW}"}}"#),
                "field \"engine\" names an engine other than PostgreSQL",
            ),
            (
                format!(r#"{{"username":"u","password":"{PW}","port":70000}}"#),
                "field \"port\" is not a TCP port",
            ),
            (
                format!(r#"{{"username":"u","password":"{PW}","port":"{PW}"}}"#),
                "field \"port\" is not a TCP port",
            ),
            (
                format!(r#"{{"username":"u","password":"{PW}","port":true}}"#),
                "field \"port\" must be a number, found a boolean",
            ),
            (
                format!(r#"{{"username":"u","password":"{PW}","host":5}}"#),
                "field \"host\" must be a string, found a number",
            ),
            (
                r#"{"username":"","password":"x"}"#.to_owned(),
                "field \"username\" is empty",
            ),
            (
                r#"{"username":"u","password":""}"#.to_owned(),
                "field \"password\" is empty",
            ),
            (format!(r#"["{PW}"]"#), "not an object"),
            (format!(r#""{PW}""#), "not an object"),
        ] {
            let m = malformed(&text, None);
            assert!(m.contains(want), "{text}: {m}");
            assert!(!m.contains("12345") && !m.contains("mysql"), "{m}");
        }
    }

    #[test]
    fn debug_redacts_the_password() {
        let secret = parse_json(&format!(r#"{{"username":"u","password":"{PW}"}}"#), None).unwrap();
        let printed = format!("{secret:?} {secret:#?}");
        assert!(!printed.contains(PW), "{printed}");
        assert!(printed.contains("\"u\""), "{printed}");
    }

    #[test]
    fn plain_passwords_are_not_json() {
        assert!(looks_like_json("  {\"username\""));
        assert!(!looks_like_json(PW));
        assert!(!looks_like_json(""));
    }
}
