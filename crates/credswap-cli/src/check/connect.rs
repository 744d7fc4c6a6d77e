//! `credswap check --connect`: one connection with the credential, and how it failed.

use std::time::Duration;

use credswap_core::Credential;
use credswap_core::contract::Failure;

use super::CheckArgs;
use super::source::Built;

/// The server to connect to: `--database-url`, else the secret's host, port and dbname.
pub(super) fn connect_config(args: &CheckArgs, built: &Built) -> Option<tokio_postgres::Config> {
    if let Some(url) = &args.database_url {
        return url.parse().ok();
    }
    let (host, port, dbname) = (built.details)()?;
    let mut config = tokio_postgres::Config::new();
    config.host(host?);
    config.port(port.unwrap_or(5432));
    if let Some(dbname) = dbname {
        config.dbname(dbname);
    }
    Some(config)
}

/// How a `--connect` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failed {
    /// The server refused the login (`28P01`, `28000`, ...).
    Auth,
    /// The server's `pg_hba.conf` rejected the connection (`28000` naming the file).
    Rejected,
    /// Anything else: network, TLS, a server that is down.
    Other,
}

pub(super) async fn connect(
    database: &credswap_rotate::Database,
    base: &tokio_postgres::Config,
    credential: &Credential,
) -> Result<(), (Failed, String)> {
    use secrecy::ExposeSecret;
    let mut config = base.clone();
    config.connect_timeout(Duration::from_secs(10));
    config.user(credential.username());
    config.password(credential.password().expose_secret());
    let describe_error = |e: &tokio_postgres::Error| {
        let failure = match e.as_db_error() {
            Some(db) if db.code().code() == "28000" && db.message().contains("pg_hba.conf") => {
                Failed::Rejected
            }
            _ if credswap_tokio_postgres::classify(e) == Failure::Auth => Failed::Auth,
            _ => Failed::Other,
        };
        let message = match e.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => error_chain(e),
        };
        (failure, message)
    };
    let opened = database.connect(config).await;
    let (client, connection) = opened.map_err(|e| describe_error(&e))?;
    let driver = tokio::spawn(connection);
    let result = client
        .simple_query("SELECT 1")
        .await
        .map(|_| ())
        .map_err(|e| describe_error(&e));
    drop(client);
    let _ = driver.await;
    result
}

/// An error and its sources, `: `-joined (a TLS failure's reason is in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}
