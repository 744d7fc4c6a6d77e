//! Parsing a `SecretString` into a credential: the JSON that AWS's RDS/Aurora rotation templates
//! write (read by [`credswap_core::database_secret::parse_json`], shared with the file and
//! environment sources), or a plain password.

use credswap_core::database_secret::{self, DatabaseSecret, SecretDetails};
use credswap_core::{Credential, SourceError};
use secrecy::SecretString;

/// Parses a `SecretString`.
///
/// A string whose first non-blank character is `{` must be a JSON object with string fields
/// `username` (or a configured `username`) and `password`; anything else is a plain password,
/// which needs the configured `username`. Error messages name the field, never a value.
pub(crate) fn parse(
    secret_string: &str,
    configured_username: Option<&str>,
) -> Result<DatabaseSecret, SourceError> {
    if database_secret::looks_like_json(secret_string) {
        return database_secret::parse_json(secret_string, configured_username);
    }
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
    Ok(DatabaseSecret::new(
        Credential::new(username, password),
        SecretDetails::default(),
    ))
}

#[cfg(test)]
mod tests {
    //! The JSON fields and their mistakes are tested with the shared parser, in
    //! `credswap_core::database_secret`; these are what a `SecretString` adds.
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
    fn rds_template_json_goes_to_the_shared_parser() {
        let text = format!(
            r#" {{"engine":"postgres","host":"db.example","username":"app","password":"{PW}",
                "dbname":"orders","port":5432,"masterarn":"arn:aws:secretsmanager:x"}}"#
        );
        let (credential, details) = parse(&text, None).unwrap().into_parts();
        assert_eq!(credential.username(), "app");
        assert_eq!(credential.password().expose_secret(), PW);
        assert_eq!(details.masterarn(), Some("arn:aws:secretsmanager:x"));
        let m = malformed(&format!(r#"{{"username":"u","password":"{PW}""#), None);
        assert!(m.contains("not valid JSON"), "{m}");
    }

    #[test]
    fn plain_strings_need_the_configured_username() {
        let (c, d) = parse(PW, Some("cfg")).unwrap().into_parts();
        assert_eq!(c.username(), "cfg");
        assert_eq!(c.password().expose_secret(), PW);
        assert_eq!(d, SecretDetails::default());
        assert!(malformed(PW, None).contains("plain string"));
        assert!(malformed("", Some("cfg")).contains("empty"));
    }
}
