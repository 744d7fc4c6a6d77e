//! IAM authentication requires TLS: [`require_tls`], the check the connect options must pass.

use credswap_core::source::BuildError;

/// The `sslmode`s that encrypt the connection, as libpq names them.
pub const TLS_SSLMODES: &[&str] = &["require", "verify-ca", "verify-full"];

/// Checks that a connection's `sslmode` (libpq's names) always uses TLS, as IAM database
/// authentication requires: `require`, `verify-ca` or `verify-full` pass; `disable`, `allow`,
/// `prefer` and anything else are refused with an error that names the setting to change.
///
/// The minted sources ([`RdsIamSource`](crate::RdsIamSource),
/// [`DsqlTokenSource`](crate::DsqlTokenSource)) only mint tokens: they never see the pool's
/// connect options. Call this where the connect options are built (the `sslmode` of the
/// connection URL, `PgSslMode` of sqlx, the `SslMode` of tokio-postgres), before the pool is
/// built, so a configuration that would send the token in clear text fails at start-up instead
/// of at the first login. RDS and Aurora refuse an IAM login without TLS, and Aurora DSQL
/// accepts only TLS connections; `verify-full` (with the Amazon RDS or DSQL CA bundle) also
/// checks that the token goes to the right server.
///
/// Leading and trailing whitespace and ASCII case are ignored.
///
/// ```
/// assert!(credswap_aws::require_tls("verify-full").is_ok());
/// let err = credswap_aws::require_tls("prefer").unwrap_err();
/// assert!(err.to_string().contains("IAM authentication requires TLS"));
/// ```
pub fn require_tls(sslmode: &str) -> Result<(), BuildError> {
    let mode = sslmode.trim().to_ascii_lowercase();
    if TLS_SSLMODES.contains(&mode.as_str()) {
        return Ok(());
    }
    let why = match mode.as_str() {
        "disable" => "never uses TLS",
        "allow" | "prefer" => "falls back to an unencrypted connection",
        "" => "is empty",
        _ => "is not an sslmode libpq knows",
    };
    Err(BuildError::new(format!(
        "IAM authentication requires TLS: sslmode `{}` {why}; set `sslmode=require` on the \
         connection (or `verify-full` with the RDS/DSQL CA bundle as the root certificate, \
         which also checks the server's name)",
        sslmode.trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_tls_accepts_the_encrypting_modes_only() {
        for mode in [
            "require",
            "verify-ca",
            "verify-full",
            " Require ",
            "VERIFY-FULL",
        ] {
            assert!(require_tls(mode).is_ok(), "{mode}");
        }
        for mode in ["disable", "allow", "prefer", "", "required"] {
            let err = require_tls(mode).unwrap_err().to_string();
            assert!(err.contains("IAM authentication requires TLS"), "{err}");
            assert!(err.contains("sslmode=require"), "{err}");
        }
        let err = require_tls("prefer").unwrap_err().to_string();
        assert!(
            err.contains("`prefer` falls back to an unencrypted connection"),
            "{err}"
        );
        assert!(
            require_tls("disable")
                .unwrap_err()
                .to_string()
                .contains("never uses TLS")
        );
    }
}
