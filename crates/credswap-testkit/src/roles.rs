//! Roles and passwords: unique names, random passwords, login roles and the alternating-users
//! pair that dual-user rotation needs.
//!
//! Passwords never appear in SQL text: the SCRAM-SHA-256 verifier is computed here and sent as
//! `PASSWORD '<verifier>'`, so the server (and its log) only ever sees the verifier.

use rand::Rng;
use rand::distr::Alphanumeric;

use crate::{Error, TestPostgres};

/// The users and objects made by [`TestPostgres::create_alternating_pair`].
#[derive(Debug, Clone)]
pub struct AlternatingPair {
    /// The `NOLOGIN` role `<prefix>_owner` that owns the schema and its table.
    pub owner: String,
    /// The two `LOGIN` roles `<prefix>_a` and `<prefix>_b`, members of `owner`.
    pub users: [String; 2],
    /// The schema `<prefix>`, holding the table `items(id bigserial primary key, note text)`.
    pub schema: String,
}

/// A valid unquoted identifier: `prefix` + `'_'` + 8 random lowercase alphanumeric characters.
///
/// `prefix` should itself be a lowercase identifier (letters, digits, `_`, not starting with a
/// digit) short enough for the 63-byte limit once suffixes such as `_owner` are added.
///
/// ```
/// let name = credswap_testkit::unique_name("app");
/// assert!(name.starts_with("app_"));
/// assert_eq!(name.len(), "app_".len() + 8);
/// ```
pub fn unique_name(prefix: &str) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..8)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect();
    format!("{prefix}_{suffix}")
}

/// A random 32-character alphanumeric password.
///
/// ```
/// let password = credswap_testkit::random_password();
/// assert_eq!(password.len(), 32);
/// assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
/// ```
pub fn random_password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// `ident` as a quoted SQL identifier: `"..."` with inner `"` doubled.
pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `text` as a SQL string literal: `'...'` with inner `'` doubled, and the `E'...'` form with
/// doubled backslashes when it contains a backslash (safe whatever
/// `standard_conforming_strings` is).
pub(crate) fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// `ALTER ROLE role PASSWORD '<verifier>'` through an existing admin client.
pub(crate) async fn alter_password(
    client: &tokio_postgres::Client,
    role: &str,
    password: &str,
) -> Result<(), Error> {
    let sql = format!(
        "ALTER ROLE {} {}",
        quote_ident(role),
        password_clause(password)
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| Error::query(format!("setting the password of role {role}"), e))
}

/// `PASSWORD '<scram verifier>'` for `password`; the password itself never leaves the process.
pub(crate) fn password_clause(password: &str) -> String {
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    format!("PASSWORD {}", quote_literal(&verifier))
}

impl TestPostgres {
    /// Creates a `LOGIN` role with the given password.
    ///
    /// # Errors
    ///
    /// [`Error::is_query`]; [`Error::code`] is `DUPLICATE_OBJECT` when the role exists.
    pub async fn create_login_role(&self, name: &str, password: &str) -> Result<(), Error> {
        let sql = format!(
            "CREATE ROLE {} LOGIN {}",
            quote_ident(name),
            password_clause(password)
        );
        self.admin()
            .await?
            .batch_execute(&sql)
            .await
            .map_err(|e| Error::query(format!("creating login role {name}"), e))
    }

    /// Sets a role's password (`ALTER ROLE .. PASSWORD`). The old password stops working for new
    /// logins at once; sessions already open stay open.
    ///
    /// # Errors
    ///
    /// [`Error::is_query`]; [`Error::code`] is `UNDEFINED_OBJECT` when the role does not exist.
    pub async fn set_password(&self, role: &str, password: &str) -> Result<(), Error> {
        alter_password(&self.admin().await?, role, password).await
    }

    /// Owner role `<prefix>_owner` (NOLOGIN) that owns a schema `<prefix>` with a table
    /// `<prefix>.items(id bigserial primary key, note text)`; two LOGIN roles `<prefix>_a`,
    /// `<prefix>_b`, members of the owner (INHERIT) with the given passwords, so both can use
    /// the same tables; both get `search_path` set to `<prefix>, public` (ALTER ROLE .. SET).
    ///
    /// This is the layout of alternating-users rotation: one user's password changes while the
    /// other keeps serving. Everything is created in one transaction. With a non-superuser
    /// (CREATEROLE) admin, the admin is granted membership in the owner role so that it can hand
    /// over ownership.
    ///
    /// # Errors
    ///
    /// [`Error::is_query`], for instance when one of the names is taken.
    pub async fn create_alternating_pair(
        &self,
        prefix: &str,
        passwords: [&str; 2],
    ) -> Result<AlternatingPair, Error> {
        let pair = AlternatingPair {
            owner: format!("{prefix}_owner"),
            users: [format!("{prefix}_a"), format!("{prefix}_b")],
            schema: prefix.to_owned(),
        };
        let owner = quote_ident(&pair.owner);
        let schema = quote_ident(&pair.schema);

        let client = self.admin().await?;
        let superuser: bool = client
            .query_one("SELECT current_setting('is_superuser') = 'on'", &[])
            .await
            .map_err(|e| Error::query("checking whether the admin is a superuser", e))?
            .get(0);

        let mut sql = format!("BEGIN;\nCREATE ROLE {owner} NOLOGIN;\n");
        if !superuser {
            sql.push_str(&format!("GRANT {owner} TO CURRENT_USER;\n"));
        }
        sql.push_str(&format!(
            "CREATE SCHEMA {schema} AUTHORIZATION {owner};\n\
             CREATE TABLE {schema}.items (id bigserial PRIMARY KEY, note text);\n\
             ALTER TABLE {schema}.items OWNER TO {owner};\n"
        ));
        for (user, password) in pair.users.iter().zip(passwords) {
            let user = quote_ident(user);
            sql.push_str(&format!(
                "CREATE ROLE {user} LOGIN INHERIT {} IN ROLE {owner};\n\
                 ALTER ROLE {user} SET search_path = {schema}, public;\n",
                password_clause(password)
            ));
        }
        sql.push_str("COMMIT;");

        client
            .batch_execute(&sql)
            .await
            .map_err(|e| Error::query(format!("creating the alternating pair {prefix}"), e))?;
        Ok(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("Mixed Case"), "\"Mixed Case\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident(""), "\"\"");
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(quote_literal("plain"), "'plain'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
        assert_eq!(quote_literal(r"x'\"), r"E'x''\\'");
    }

    #[test]
    fn password_clause_carries_a_verifier_not_the_password() {
        let clause = password_clause("correct horse");
        assert!(
            clause.starts_with("PASSWORD 'SCRAM-SHA-256$4096:"),
            "{clause}"
        );
        assert!(!clause.contains("correct horse"));
    }

    #[test]
    fn unique_names_are_unquoted_identifiers() {
        let name = unique_name("rot");
        let suffix = name.strip_prefix("rot_").unwrap();
        assert_eq!(suffix.len(), 8);
        assert!(
            suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(unique_name("rot"), unique_name("rot"));
    }

    #[test]
    fn random_passwords_differ() {
        let a = random_password();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, random_password());
    }
}
