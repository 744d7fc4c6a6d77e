//! `credswap`: the command-line companion of the credswap crates.
//!
//! `credswap drill` starts an embedded PostgreSQL (or uses `--database-url`), rotates the
//! application's credential every second while 32 workers query through each pool, and prints
//! what every pool did: requests ok and failed, latency, backends, stale sessions after the drain.
//!
//! With `--source vault-dynamic|vault-static` the drill reads a local OpenBao's database
//! dynamic or static role, which Vault itself rotates. With `--source minted` it reads
//! short-lived tokens (RDS IAM / Aurora DSQL style) from a local token gate, as minted
//! credentials and, for comparison, as plain passwords.
//!
//! With `--fleet N` the drill runs N application instances at once, each with its own source
//! client, provider and pool, all reading one secret, and reports how the fleet converges on
//! each rotation, what it costs the store and the server's logins (see `fleet`).
//!
//! `credswap check` reads a credential through any source (AWS, Vault, a file, the environment),
//! optionally connects with it, and exits with a code per problem, for cron jobs and probes.
//!
//! `credswap rotate` rotates a database secret in AWS Secrets Manager with
//! `credswap_rotate::Rotator` (the whole rotation, or one step of it).

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

mod adapters;
mod aws;
mod check;
mod cli;
mod drill;
mod fleet;
mod minted;
mod output;
mod plot;
mod rotate;
mod secrets_manager;
mod vault;

use std::process::ExitCode;
fn main() -> ExitCode {
    let cli = cli::Cli::parse_checked();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CREDSWAP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match cli.command {
        // Interrupted (Ctrl-C, or a SIGTERM from `timeout` or a CI runner), the drill's future
        // is dropped, and the runtime's tasks with it at its shutdown below: the embedded
        // PostgreSQL, moto, OpenBao and PgBouncer it started are stopped and their directories
        // removed, as at the end of a run. Otherwise a signal ended the process at once and left
        // them running.
        cli::Command::Drill(args) => runtime.block_on(async {
            tokio::select! {
                code = drill::main(args) => code,
                signal = interrupted() => {
                    eprintln!(
                        "\n{}: stopping the drill and the servers it started",
                        signal.name
                    );
                    ExitCode::from(signal.exit_status)
                }
            }
        }),
        cli::Command::Rotate(args) => runtime.block_on(rotate::main(args)),
        cli::Command::Check(args) => runtime.block_on(check::main(args)),
    };
    // Drops every task (and the servers they hold); a blocking call that outlives this is
    // abandoned rather than waited for without end.
    runtime.shutdown_timeout(SHUTDOWN_MAX);
    code
}

/// The longest the runtime's shutdown waits for blocking calls (a server's `pg_ctl stop` waits
/// up to 10 s).
const SHUTDOWN_MAX: std::time::Duration = std::time::Duration::from_secs(15);

/// A signal that ends the drill early.
struct Interrupted {
    name: &'static str,
    /// The shell's convention: 128 + the signal's number.
    exit_status: u8,
}

/// Waits for SIGINT (Ctrl-C) or, on Unix, SIGTERM. Where a handler cannot be installed, that
/// signal keeps its default action.
async fn interrupted() -> Interrupted {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => Interrupted { name: "interrupted", exit_status: 130 },
        () = terminate => Interrupted { name: "terminated", exit_status: 143 },
    }
}
