//! [`PasswordPolicy`]: how new passwords are generated (locally, with the thread's CSPRNG).

use std::fmt;

use rand::seq::IndexedRandom;
use secrecy::SecretString;

use crate::Error;

/// Characters left out by default: those that break a connection URL, a quoted string or a
/// shell word unless escaped (`"`, `'`, `` ` ``, `\`, `/`, `@`, `:`, `?`, `#`, `%`, `&`, `+`,
/// `;`, `=`, `<`, `>`, `|`, `$`, `{`, `}`, `[`, `]`, `^`, `~`, `!`, `*`, `(`, `)`, `,`): the
/// punctuation left is `-`, `.` and `_`, so a password is made of RFC 3986 unreserved
/// characters only and can be pasted into a URL, a libpq connection string or a shell as it
/// is. AWS's rotation templates exclude only `:/@"'\` by default.
pub const DEFAULT_EXCLUDED: &str = "\"'`\\/@:?#%&+;=<>|${}[]^~!*(),";

/// The default length (AWS's templates use 32 too).
pub const DEFAULT_LENGTH: usize = 32;

/// How new passwords are generated: a length and an alphabet (printable ASCII without
/// space, minus excluded characters), with at least one character of each included class
/// (lowercase, uppercase, digit, punctuation) as AWS's `GetRandomPassword`
/// (`RequireEachIncludedType`) does.
///
/// ```
/// use credswap_rotate::PasswordPolicy;
///
/// let policy = PasswordPolicy::new()
///     .with_length(40)
///     .with_excluded_characters("\"'\\/@:");
/// assert_eq!(policy.length(), 40);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    length: usize,
    excluded: String,
    punctuation: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy::new()
    }
}

impl PasswordPolicy {
    /// [`DEFAULT_LENGTH`] characters without [`DEFAULT_EXCLUDED`].
    pub fn new() -> PasswordPolicy {
        PasswordPolicy {
            length: DEFAULT_LENGTH,
            excluded: DEFAULT_EXCLUDED.to_owned(),
            punctuation: true,
        }
    }

    /// With another length (8 to 4096 characters; checked when a password is generated).
    pub fn with_length(mut self, length: usize) -> PasswordPolicy {
        self.length = length;
        self
    }

    /// With other excluded characters, replacing [`DEFAULT_EXCLUDED`] (AWS's
    /// `ExcludeCharacters`).
    pub fn with_excluded_characters(mut self, excluded: impl Into<String>) -> PasswordPolicy {
        self.excluded = excluded.into();
        self
    }

    /// With punctuation used or not at all (AWS's `ExcludePunctuation`, inverted). Default true.
    pub fn with_punctuation(mut self, punctuation: bool) -> PasswordPolicy {
        self.punctuation = punctuation;
        self
    }

    /// The length.
    pub fn length(&self) -> usize {
        self.length
    }

    /// The characters passwords are drawn from.
    pub fn alphabet(&self) -> Vec<char> {
        ('!'..='~')
            .filter(|c| self.punctuation || c.is_ascii_alphanumeric())
            .filter(|c| !self.excluded.contains(*c))
            .collect()
    }

    /// A new random password.
    ///
    /// # Errors
    ///
    /// [`Error::is_config`] when the length is outside 8..=4096 or the alphabet is empty.
    pub fn generate(&self) -> Result<SecretString, Error> {
        if !(8..=4096).contains(&self.length) {
            return Err(Error::config(format!(
                "the password length must be 8 to 4096 characters, not {}",
                self.length
            )));
        }
        let alphabet = self.alphabet();
        if alphabet.is_empty() {
            return Err(Error::config(
                "the password policy excludes every character",
            ));
        }
        let classes: Vec<fn(&char) -> bool> = vec![
            char::is_ascii_lowercase,
            char::is_ascii_uppercase,
            char::is_ascii_digit,
            char::is_ascii_punctuation,
        ];
        let present: Vec<_> = classes
            .into_iter()
            .filter(|class| alphabet.iter().any(class))
            .collect();
        let mut rng = rand::rng();
        loop {
            let password: String = (0..self.length)
                .map(|_| *alphabet.choose(&mut rng).expect("alphabet is not empty"))
                .collect();
            // With 8+ characters and at most 4 classes this takes a few draws at most.
            if present
                .iter()
                .all(|class| password.chars().any(|c| class(&c)))
            {
                return Ok(SecretString::from(password));
            }
        }
    }
}

impl fmt::Debug for PasswordPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordPolicy")
            .field("length", &self.length)
            .field("excluded", &self.excluded)
            .field("punctuation", &self.punctuation)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn default_passwords_are_url_safe_and_mixed() {
        for _ in 0..200 {
            let password = PasswordPolicy::new().generate().unwrap();
            let password = password.expose_secret();
            assert_eq!(password.len(), DEFAULT_LENGTH);
            assert!(password.chars().all(|c| c.is_ascii_graphic()));
            assert!(
                !password.chars().any(|c| DEFAULT_EXCLUDED.contains(c)),
                "{password}"
            );
            assert!(password.chars().any(|c| c.is_ascii_lowercase()));
            assert!(password.chars().any(|c| c.is_ascii_uppercase()));
            assert!(password.chars().any(|c| c.is_ascii_digit()));
            assert!(password.chars().any(|c| c.is_ascii_punctuation()));
        }
    }

    #[test]
    fn policies_are_checked() {
        assert!(
            PasswordPolicy::new()
                .with_length(4)
                .generate()
                .unwrap_err()
                .is_config()
        );
        let nothing: String = ('!'..='~').collect();
        let err = PasswordPolicy::new()
            .with_excluded_characters(nothing)
            .generate()
            .unwrap_err();
        assert!(err.is_config());
        let alnum = PasswordPolicy::new()
            .with_punctuation(false)
            .with_length(64)
            .generate()
            .unwrap();
        assert!(
            alnum
                .expose_secret()
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn passwords_differ() {
        let policy = PasswordPolicy::new();
        assert_ne!(
            policy.generate().unwrap().expose_secret(),
            policy.generate().unwrap().expose_secret()
        );
    }
}
