//! [`EnvSource`]: the credential from environment variables, for local development.

use std::ffi::OsString;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use credswap_core::{Credential, CredentialSource, SourceError};

use crate::secret::{
    DatabaseSecret, Fingerprint, SecretDetails, looks_like_json, malformed_is, parse_json,
};
use credswap_core::source::BuildError;

/// libpq's variable for the username, read by default.
pub const PGUSER: &str = "PGUSER";
/// libpq's variable for the password, read by default.
pub const PGPASSWORD: &str = "PGPASSWORD";

/// A [`CredentialSource`] reading environment variables at every fetch: for local development
/// and tests, where the password is exported in the shell or a `.env` file.
///
/// By default `PGUSER` and `PGPASSWORD` (libpq's names); any two names, a fixed username, or one
/// variable holding RDS/Aurora-style JSON through [`EnvSource::builder`]. A variable that is
/// not set, empty or not UTF-8 is [`malformed`](SourceError::is_malformed), with a message that
/// names the variable and never a value. The version is a keyed hash of the values (see
/// [`FileSource`](crate::FileSource)); there is no issue time.
///
/// The environment does not change under a running process, so a provider over this source
/// never rotates: use a [`FileSource`](crate::FileSource) or a secret store in production.
///
/// ```
/// use credswap_file::EnvSource;
///
/// let source = EnvSource::new(); // PGUSER, PGPASSWORD
/// let source = EnvSource::builder().username("app").password_field("APP_DB_PASSWORD").build()?;
/// let source = EnvSource::builder().json_var("APP_DB_SECRET").build()?;
/// # let _ = source;
/// # Ok::<(), credswap_file::BuildError>(())
/// ```
///
/// `Debug` prints the variables' names, never a value.
#[derive(Clone)]
pub struct EnvSource {
    config: Arc<EnvConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Username {
    Var(String),
    Fixed(String),
}

#[derive(Debug, Clone)]
enum EnvConfig {
    Pair {
        username: Username,
        password: String,
    },
    Json {
        var: String,
        username: Option<String>,
    },
}

impl EnvSource {
    /// `PGUSER` and `PGPASSWORD`.
    pub fn new() -> Self {
        Self {
            config: Arc::new(EnvConfig::Pair {
                username: Username::Var(PGUSER.to_owned()),
                password: PGPASSWORD.to_owned(),
            }),
        }
    }

    /// A builder, starting from `PGUSER` and `PGPASSWORD`.
    pub fn builder() -> EnvSourceBuilder {
        EnvSourceBuilder {
            username_field: None,
            username: None,
            password_field: None,
            json_var: None,
        }
    }

    /// The names of the variables read.
    pub fn variables(&self) -> Vec<&str> {
        match &*self.config {
            EnvConfig::Pair { username, password } => match username {
                Username::Var(var) => vec![var.as_str(), password.as_str()],
                Username::Fixed(_) => vec![password.as_str()],
            },
            EnvConfig::Json { var, .. } => vec![var.as_str()],
        }
    }

    /// Reads the variables now: the credential and, from JSON, the details (host, port, dbname).
    pub async fn fetch_secret(&self) -> Result<DatabaseSecret, SourceError> {
        self.read_with(&|name| std::env::var_os(name))
    }

    /// Reads through `lookup` instead of the process environment (tests, a parsed `.env`).
    pub(crate) fn read_with(
        &self,
        lookup: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<DatabaseSecret, SourceError> {
        let value = |var: &str| -> Result<String, SourceError> {
            let origin = format!("environment variable {var}");
            let raw = lookup(var).ok_or_else(|| malformed_is(&origin, "is not set"))?;
            let text = raw
                .into_string()
                .map_err(|_| malformed_is(&origin, "is not valid UTF-8"))?;
            if text.is_empty() {
                return Err(malformed_is(&origin, "is empty"));
            }
            Ok(text)
        };
        let (credential, details, fingerprint) = match &*self.config {
            EnvConfig::Pair { username, password } => {
                let username = match username {
                    Username::Var(var) => value(var)?,
                    Username::Fixed(name) => name.clone(),
                };
                let password = value(password)?;
                let fingerprint =
                    Fingerprint::of([Some(username.as_bytes()), Some(password.as_bytes())]);
                (
                    Credential::new(username, password),
                    SecretDetails::default(),
                    fingerprint,
                )
            }
            EnvConfig::Json { var, username } => {
                let origin = format!("environment variable {var}");
                let text = value(var)?;
                if !looks_like_json(&text) {
                    return Err(malformed_is(
                        &origin,
                        "does not hold a JSON object (expected {\"username\": .., \"password\": ..})",
                    ));
                }
                let fingerprint = Fingerprint::of([Some(text.as_bytes())]);
                let (credential, details) = parse_json(&origin, &text, username.as_deref())?;
                (credential, details, fingerprint)
            }
        };
        Ok(DatabaseSecret::new(
            credential.with_version(fingerprint.version()),
            details,
        ))
    }
}

impl Default for EnvSource {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl CredentialSource for EnvSource {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        self.fetch_secret()
            .await
            .map(|secret| secret.into_parts().0)
    }
}

impl fmt::Debug for EnvSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.config {
            EnvConfig::Pair { username, password } => {
                let mut d = f.debug_struct("EnvSource");
                match username {
                    Username::Var(var) => d.field("username_field", var),
                    Username::Fixed(name) => d.field("username", name),
                };
                d.field("password_field", password).finish()
            }
            EnvConfig::Json { var, username } => f
                .debug_struct("EnvSource")
                .field("json_var", var)
                .field("username", username)
                .finish(),
        }
    }
}

/// Builds an [`EnvSource`]; see [`EnvSource::builder`].
///
/// The username comes from a variable ([`username_field`](Self::username_field), `PGUSER` by
/// default) or is fixed ([`username`](Self::username)); the password from a variable
/// ([`password_field`](Self::password_field), `PGPASSWORD` by default). Or one variable holds
/// RDS/Aurora-style JSON ([`json_var`](Self::json_var)), with the JSON's own field names.
/// Settings that contradict each other are a [`build`](Self::build) error, never ignored: a
/// fixed username and a username variable, or a username or password variable with
/// `json_var`.
#[must_use]
#[derive(Debug, Clone)]
pub struct EnvSourceBuilder {
    username_field: Option<String>,
    username: Option<String>,
    password_field: Option<String>,
    json_var: Option<String>,
}

impl EnvSourceBuilder {
    /// The variable holding the username (`PGUSER` by default). Not with a fixed
    /// [`username`](Self::username) or with [`json_var`](Self::json_var).
    pub fn username_field(mut self, name: impl Into<String>) -> Self {
        self.username_field = Some(name.into());
        self
    }

    /// A fixed username instead of a username variable (not with
    /// [`username_field`](Self::username_field)). With [`json_var`](Self::json_var): the
    /// username when the JSON has no `username` field.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The variable holding the password (`PGPASSWORD` by default). Not with
    /// [`json_var`](Self::json_var).
    pub fn password_field(mut self, name: impl Into<String>) -> Self {
        self.password_field = Some(name.into());
        self
    }

    /// One variable holding RDS/Aurora-style JSON (`username`, `password`, optional `engine`,
    /// `host`, `port`, `dbname`) instead of the username and password variables.
    pub fn json_var(mut self, name: impl Into<String>) -> Self {
        self.json_var = Some(name.into());
        self
    }

    /// Builds the source. The variables need not be set yet: they are read at each fetch.
    ///
    /// Fails when a variable name is empty or holds `=` or NUL, when the username is empty,
    /// when the username and password variables are the same, when both a fixed username and
    /// a username variable are given, or when a username or password variable is given with
    /// [`json_var`](Self::json_var).
    pub fn build(self) -> Result<EnvSource, BuildError> {
        let check = |what: &str, name: &str| {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                Err(BuildError::new(format!(
                    "{what} \"{name}\" is not an environment variable name"
                )))
            } else {
                Ok(())
            }
        };
        if self.username.as_deref().is_some_and(str::is_empty) {
            return Err(BuildError::new("the username is empty"));
        }
        if self.username.is_some() && self.username_field.is_some() {
            return Err(BuildError::new(
                "both a fixed username and username_field are set: give one",
            ));
        }
        let config = match self.json_var {
            Some(var) => {
                check("json_var", &var)?;
                for (what, set) in [
                    ("username_field", self.username_field.is_some()),
                    ("password_field", self.password_field.is_some()),
                ] {
                    if set {
                        return Err(BuildError::new(format!(
                            "{what} names a variable of its own, but json_var reads the \
                             username and the password from the JSON"
                        )));
                    }
                }
                EnvConfig::Json {
                    var,
                    username: self.username,
                }
            }
            None => {
                let password = self.password_field.unwrap_or_else(|| PGPASSWORD.to_owned());
                check("password_field", &password)?;
                let username = match self.username {
                    Some(name) => Username::Fixed(name),
                    None => {
                        let var = self.username_field.unwrap_or_else(|| PGUSER.to_owned());
                        check("username_field", &var)?;
                        if var == password {
                            return Err(BuildError::new(
                                "username_field and password_field name the same variable",
                            ));
                        }
                        Username::Var(var)
                    }
                };
                EnvConfig::Pair { username, password }
            }
        };
        Ok(EnvSource {
            config: Arc::new(config),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    const PW: &str = "env-pw-3f2a-never-printed";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn malformed_message(source: &EnvSource, pairs: &[(&str, &str)]) -> String {
        let err = source.read_with(&env(pairs)).unwrap_err();
        assert!(err.is_malformed(), "{err:?}");
        let printed = format!("{err} {err:?}");
        assert!(!printed.contains(PW), "{printed}");
        printed
    }

    #[test]
    fn pguser_and_pgpassword_by_default() {
        let source = EnvSource::new();
        assert_eq!(source.variables(), ["PGUSER", "PGPASSWORD"]);
        let secret = source
            .read_with(&env(&[("PGUSER", "app"), ("PGPASSWORD", PW)]))
            .unwrap();
        assert_eq!(secret.credential().username(), "app");
        assert_eq!(secret.credential().password().expose_secret(), PW);
        assert!(
            secret
                .credential()
                .version()
                .unwrap()
                .starts_with("content-")
        );
        let m = malformed_message(&source, &[("PGUSER", "app")]);
        assert!(
            m.contains("environment variable PGPASSWORD is not set"),
            "{m}"
        );
        let m = malformed_message(&source, &[("PGPASSWORD", PW)]);
        assert!(m.contains("environment variable PGUSER is not set"), "{m}");
        let m = malformed_message(&source, &[("PGUSER", "app"), ("PGPASSWORD", "")]);
        assert!(m.contains("PGPASSWORD is empty"), "{m}");
    }

    #[test]
    fn configured_names_and_a_fixed_username() {
        let source = EnvSource::builder()
            .username("app")
            .password_field("APP_DB_PASSWORD")
            .build()
            .unwrap();
        assert_eq!(source.variables(), ["APP_DB_PASSWORD"]);
        let secret = source
            .read_with(&env(&[("APP_DB_PASSWORD", PW), ("PGUSER", "ignored")]))
            .unwrap();
        assert_eq!(secret.credential().username(), "app");
        let source = EnvSource::builder()
            .username_field("APP_DB_USER")
            .password_field("APP_DB_PASSWORD")
            .build()
            .unwrap();
        let m = malformed_message(&source, &[("APP_DB_PASSWORD", PW)]);
        assert!(m.contains("APP_DB_USER is not set"), "{m}");
    }

    #[test]
    fn one_json_variable() {
        let source = EnvSource::builder().json_var("DB_SECRET").build().unwrap();
        let json = format!(r#"{{"username":"app","password":"{PW}","host":"h","port":5433}}"#);
        let secret = source.read_with(&env(&[("DB_SECRET", &json)])).unwrap();
        assert_eq!(secret.credential().username(), "app");
        assert_eq!(secret.details().port(), Some(5433));
        let m = malformed_message(&source, &[("DB_SECRET", &json[..json.len() - 3])]);
        assert!(
            m.contains("environment variable DB_SECRET: the secret is not valid JSON"),
            "{m}"
        );
        let m = malformed_message(&source, &[("DB_SECRET", PW)]);
        assert!(m.contains("does not hold a JSON object"), "{m}");
        let m = malformed_message(&source, &[]);
        assert!(m.contains("DB_SECRET is not set"), "{m}");
        let with_default = EnvSource::builder()
            .json_var("DB_SECRET")
            .username("fallback")
            .build()
            .unwrap();
        let secret = with_default
            .read_with(&env(&[("DB_SECRET", &format!(r#"{{"password":"{PW}"}}"#))]))
            .unwrap();
        assert_eq!(secret.credential().username(), "fallback");
    }

    #[test]
    fn build_checks_names() {
        let err = |b: EnvSourceBuilder| b.build().unwrap_err().to_string();
        assert!(err(EnvSource::builder().password_field("")).contains("password_field"));
        assert!(err(EnvSource::builder().password_field("A=B")).contains("password_field"));
        assert!(err(EnvSource::builder().json_var("")).contains("json_var"));
        assert!(err(EnvSource::builder().username("")).contains("username"));
        assert!(err(EnvSource::builder().username_field("X").password_field("X")).contains("same"));
        assert!(err(EnvSource::builder().password_field("PGUSER")).contains("same"));
        // Contradicting settings are errors, not a silent last-one-wins.
        assert!(
            err(EnvSource::builder()
                .username("app")
                .username_field("APP_USER"))
            .contains("both a fixed username and username_field")
        );
        assert!(
            err(EnvSource::builder().json_var("S").password_field("P"))
                .contains("password_field names a variable")
        );
        assert!(
            err(EnvSource::builder().json_var("S").username_field("U"))
                .contains("username_field names a variable")
        );
        let debug = format!(
            "{:?}",
            EnvSource::builder().username("app").build().unwrap()
        );
        assert!(
            debug.contains("PGPASSWORD") && debug.contains("app"),
            "{debug}"
        );
    }
}
