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
    match cli.command {
        cli::Command::Drill(args) => runtime.block_on(drill::main(args)),
        cli::Command::Rotate(args) => runtime.block_on(rotate::main(args)),
        cli::Command::Check(args) => runtime.block_on(check::main(args)),
    }
}
