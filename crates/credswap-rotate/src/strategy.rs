//! [`Strategy`]: single user or alternating users, and the SQL each one runs in setSecret.

use secrecy::SecretString;

use crate::Error;
use crate::db::{Session, password_clause, quote_ident, quote_literal};

/// The suffix of the second user of alternating users, as AWS's templates name it.
pub const CLONE_SUFFIX: &str = "_clone";

/// PostgreSQL's limit on identifiers (bytes).
const MAX_IDENTIFIER: usize = 63;

/// Settings whose values are lists of names (PostgreSQL's `GUC_LIST_QUOTE`): copied element
/// by element.
const LIST_SETTINGS: [&str; 4] = [
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "local_preload_libraries",
];

/// How the database side of a rotation works.
#[derive(Debug, Clone)]
pub enum Strategy {
    /// One user whose password changes (`ALTER ROLE CURRENT_USER PASSWORD ...`, logged in as
    /// the user itself with its current password, as AWS's single-user template does). Between
    /// setSecret and finishSecret the database accepts only the pending password while the
    /// store still hands out the current one: clients that log in then are refused until they
    /// fetch the new `AWSCURRENT`.
    SingleUser,
    /// Two users, `<user>` and `<user>_clone`, taking turns: each rotation changes the password
    /// of the one not in `AWSCURRENT`, so the current login keeps working throughout. The
    /// first rotation creates the clone (logged in as the master credential).
    AlternatingUsers(Master),
}

/// The credential that may create the clone role and change the inactive user's password
/// (alternating users). It is always used against the host, port and database of the secret
/// being rotated.
#[derive(Debug, Clone)]
pub enum Master {
    /// The secret named by the rotated secret's `masterarn` field (AWS's layout).
    FromSecret,
    /// The `AWSCURRENT` value of this secret (name or ARN): a JSON object with at least
    /// `username` and `password`.
    Secret(String),
    /// This login.
    Login {
        /// The user.
        username: String,
        /// Its password.
        password: SecretString,
    },
}

/// The other user of an alternating pair: `<name>_clone`, or `<name>` when the given name
/// ends with `_clone` (AWS's templates' naming).
///
/// # Errors
///
/// [`Error::is_malformed`] when `<name>_clone` would exceed PostgreSQL's 63 bytes.
///
/// ```
/// use credswap_rotate::alternate_username;
///
/// assert_eq!(alternate_username("app").unwrap(), "app_clone");
/// assert_eq!(alternate_username("app_clone").unwrap(), "app");
/// ```
pub fn alternate_username(username: &str) -> Result<String, Error> {
    if let Some(original) = username.strip_suffix(CLONE_SUFFIX)
        && !original.is_empty()
    {
        return Ok(original.to_owned());
    }
    let clone = format!("{username}{CLONE_SUFFIX}");
    if clone.len() > MAX_IDENTIFIER {
        return Err(Error::malformed(format!(
            "cannot clone user {username}: {clone} would exceed PostgreSQL's {MAX_IDENTIFIER} bytes"
        )));
    }
    Ok(clone)
}

/// Single user: `ALTER ROLE CURRENT_USER PASSWORD '<verifier>'` in a session logged in as
/// the user itself.
pub(crate) async fn alter_own_password(
    session: &mut Session,
    username: &str,
    password: &SecretString,
) -> Result<(), Error> {
    let sql = format!("ALTER ROLE CURRENT_USER {}", password_clause(password));
    session
        .driver
        .run(session.client.batch_execute(&sql))
        .await
        .map_err(|e| {
            Error::database(
                format!("changing the password of role {username} (as itself)"),
                Some(username),
                Some(e),
            )
        })
}

/// Whether role `name` exists.
pub(crate) async fn role_exists(session: &mut Session, name: &str) -> Result<bool, Error> {
    let rows = session
        .driver
        .run(
            session
                .client
                .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name]),
        )
        .await
        .map_err(|e| Error::database(format!("looking up role {name}"), Some(name), Some(e)))?;
    Ok(!rows.is_empty())
}

/// Alternating users: `ALTER ROLE <user> PASSWORD '<verifier>'` as the master.
pub(crate) async fn alter_password(
    session: &mut Session,
    username: &str,
    password: &SecretString,
) -> Result<(), Error> {
    let sql = format!(
        "ALTER ROLE {} {}",
        quote_ident(username),
        password_clause(password)
    );
    session
        .driver
        .run(session.client.batch_execute(&sql))
        .await
        .map_err(|e| {
            Error::database(
                format!("changing the password of role {username}"),
                Some(username),
                Some(e),
            )
        })
}

/// Alternating users, first rotation: creates `clone` as a login role with `password`, makes
/// it a member of `original` (`GRANT original TO clone`, as AWS's multi-user template does:
/// the clone inherits every privilege of the original, owned objects included), of every role
/// `original` is directly a member of (when `original` inherits, so the clone's
/// `pg_auth_members` rows match), and copies `original`'s per-role settings (`ALTER ROLE ..
/// SET`, such as `search_path`, which membership does not carry). One transaction.
pub(crate) async fn create_clone(
    session: &mut Session,
    original: &str,
    clone: &str,
    password: &SecretString,
) -> Result<(), Error> {
    let db_error = |what: &str, e| {
        Error::database(
            format!("{what} (creating role {clone} from {original})"),
            Some(clone),
            Some(e),
        )
    };
    let rows = session
        .driver
        .run(session.client.query(
            "SELECT rolinherit FROM pg_roles WHERE rolname = $1",
            &[&original],
        ))
        .await
        .map_err(|e| db_error("reading the original role", e))?;
    let Some(row) = rows.first() else {
        return Err(Error::database(
            format!("role {original} does not exist (it is the secret's current user)"),
            Some(original),
            None,
        ));
    };
    let inherits: bool = row.get(0);
    let memberships = session
        .driver
        .run(session.client.query(
            "SELECT g.rolname FROM pg_auth_members m \
             JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
             WHERE u.rolname = $1 ORDER BY g.rolname",
            &[&original],
        ))
        .await
        .map_err(|e| db_error("reading the original's memberships", e))?;
    let settings = session
        .driver
        .run(session.client.query(
            "SELECT d.datname, s.setconfig FROM pg_db_role_setting s \
             JOIN pg_roles u ON u.oid = s.setrole \
             LEFT JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE u.rolname = $1",
            &[&original],
        ))
        .await
        .map_err(|e| db_error("reading the original's settings", e))?;

    let target = quote_ident(clone);
    let mut sql = format!(
        "BEGIN;\nCREATE ROLE {target} WITH LOGIN {};\nGRANT {} TO {target};\n",
        password_clause(password),
        quote_ident(original)
    );
    if inherits {
        for row in &memberships {
            let group: String = row.get(0);
            sql.push_str(&format!("GRANT {} TO {target};\n", quote_ident(&group)));
        }
    }
    for row in &settings {
        let database: Option<String> = row.get(0);
        let config: Option<Vec<String>> = row.get(1);
        let scope = match &database {
            Some(db) => format!("IN DATABASE {} ", quote_ident(db)),
            None => String::new(),
        };
        for entry in config.unwrap_or_default() {
            match setting_clause(&entry) {
                Some(clause) => sql.push_str(&format!("ALTER ROLE {target} {scope}{clause};\n")),
                None => tracing::warn!(
                    role = original,
                    "a per-role setting was not copied to the clone (unexpected name)"
                ),
            }
        }
    }
    sql.push_str("COMMIT;");
    let result = session.driver.run(session.client.batch_execute(&sql)).await;
    if let Err(e) = result {
        // The failed transaction must not stay open on this session.
        let _ = session
            .driver
            .run(session.client.batch_execute("ROLLBACK"))
            .await;
        return Err(db_error("creating the role", e));
    }
    tracing::info!(
        original,
        clone,
        memberships = if inherits { memberships.len() } else { 0 },
        settings = settings.len(),
        "created the clone role"
    );
    Ok(())
}

/// `SET name = value` for a `pg_db_role_setting` entry (`name=value`); `None` when the name
/// is not a plain (possibly dotted) identifier.
fn setting_clause(entry: &str) -> Option<String> {
    let (name, value) = entry.split_once('=')?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return None;
    }
    let value = if LIST_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
        split_list(value)
            .iter()
            .map(|element| quote_literal(element))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        quote_literal(value)
    };
    Some(format!("SET {name} = {value}"))
}

/// Splits a stored list setting (`a, "My Schema", public`) into its elements, unquoted.
fn split_list(value: &str) -> Vec<String> {
    let mut elements = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => {
                elements.push(std::mem::take(&mut current).trim().to_owned());
            }
            c if c.is_whitespace() && !quoted && current.is_empty() => {}
            c => current.push(c),
        }
    }
    let last = current.trim().to_owned();
    if !last.is_empty() || !elements.is_empty() {
        elements.push(last);
    }
    elements
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternate_names_follow_aws() {
        assert_eq!(alternate_username("app").unwrap(), "app_clone");
        assert_eq!(alternate_username("app_clone").unwrap(), "app");
        assert_eq!(alternate_username("_clone").unwrap(), "_clone_clone");
        assert!(
            alternate_username(&"x".repeat(58))
                .unwrap_err()
                .is_malformed()
        );
        assert_eq!(alternate_username(&"x".repeat(57)).unwrap().len(), 63);
    }

    #[test]
    fn settings_are_requoted() {
        assert_eq!(
            setting_clause("search_path=app, \"My \"\"S\"\"\", public").unwrap(),
            "SET search_path = 'app', 'My \"S\"', 'public'"
        );
        assert_eq!(
            setting_clause("work_mem=64MB").unwrap(),
            "SET work_mem = '64MB'"
        );
        assert_eq!(
            setting_clause("app.note=it's").unwrap(),
            "SET app.note = 'it''s'"
        );
        assert!(setting_clause("bad name;--=x").is_none());
    }
}
