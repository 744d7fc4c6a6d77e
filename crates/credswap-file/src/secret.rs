//! What a file or a variable holds: the RDS/Aurora-style JSON (read by the parser all sources
//! share, [`credswap_core::database_secret::parse_json`]), a plain password, and the
//! credential's version (a keyed content hash).
//!
//! Every message names where the value came from (`file /run/secrets/db/password`, `environment
//! variable PGPASSWORD`) and the field, never a value.

use std::fmt;
use std::sync::OnceLock;

pub(crate) use credswap_core::database_secret::{DatabaseSecret, SecretDetails, looks_like_json};
use credswap_core::{Credential, SourceError, database_secret};
use sha2::{Digest, Sha256};

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

/// Parses the RDS/Aurora-style JSON object with the shared parser; messages start with `origin`.
pub(crate) fn parse_json(
    origin: &str,
    text: &str,
    configured_username: Option<&str>,
) -> Result<(Credential, SecretDetails), SourceError> {
    database_secret::parse_json(text, configured_username)
        .map(DatabaseSecret::into_parts)
        .map_err(|e| malformed(origin, e.message()))
}

/// A port written as text (a `port` file).
pub(crate) fn parse_port(origin: &str, text: &str) -> Result<u16, SourceError> {
    text.trim()
        .parse::<u16>()
        .map_err(|_| malformed_is(origin, "is not a TCP port"))
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
    fn json_goes_to_the_shared_parser_and_names_the_origin() {
        let text =
            format!(r#"{{"engine":"postgres","username":"app","password":"{PW}","port":"6432"}}"#);
        let (c, d) = parse_json(ORIGIN, &text, None).unwrap();
        assert_eq!(c.username(), "app");
        assert_eq!(c.password().expose_secret(), PW);
        assert_eq!(d.port(), Some(6432));
        let m = malformed_message(&format!(r#"{{"username":"u","password":"{PW}""#), None);
        assert!(m.contains("not valid JSON"), "{m}");
        let m = malformed_message(r#"{"username":"u","password":12345}"#, None);
        assert!(
            m.contains(&format!("{ORIGIN}: field \"password\" must be a string")),
            "{m}"
        );
        assert!(!m.contains("12345"), "{m}");
        let err = parse_port(ORIGIN, "x5432").unwrap_err();
        assert!(
            err.is_malformed() && err.message().contains("not a TCP port"),
            "{err}"
        );
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
