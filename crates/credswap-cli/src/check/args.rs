//! `credswap check`'s arguments: [`CheckArgs`] and the store it reads, [`CheckSource`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Which store the credential is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckSource {
    /// AWS Secrets Manager (`--secret-id`; region, credentials and endpoint from the AWS
    /// environment, or `--endpoint-url`).
    Aws,
    /// Vault/OpenBao KV v2 (`--mount`, default `secret`; `--path`; address and token from
    /// VAULT_ADDR/BAO_ADDR and VAULT_TOKEN/BAO_TOKEN).
    VaultKv,
    /// Vault/OpenBao database dynamic role (`--mount`, default `database`; `--role`). The lease
    /// the check creates is revoked when it ends.
    VaultDynamic,
    /// Vault/OpenBao database static role (`--mount`, default `database`; `--role`).
    VaultStatic,
    /// A mounted file or directory (`--path`: a Kubernetes secret volume, a password file with
    /// `--username`, or an RDS-style JSON file).
    File,
    /// Environment variables (PGUSER/PGPASSWORD, or `--username-var`, `--password-var`,
    /// `--json-var`).
    Env,
    /// An RDS/Aurora IAM authentication token minted for `--user` at `--host`:`--port`
    /// (region from `--region` or the AWS environment, signed with the AWS environment's
    /// credentials). `--connect` needs TLS (default `--sslmode require`).
    RdsIam,
    /// An Aurora DSQL authentication token for the cluster endpoint `--host`: `--admin` for the
    /// `admin` role, or `--user ROLE` for a custom role. `--connect` needs TLS (default
    /// `--sslmode require`).
    Dsql,
}

impl CheckSource {
    /// Whether the source mints IAM tokens (which need TLS to log in).
    pub fn is_minted(self) -> bool {
        matches!(self, CheckSource::RdsIam | CheckSource::Dsql)
    }
}

/// `credswap check` arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Where to read the credential.
    #[arg(long)]
    pub source: CheckSource,

    /// AWS: the secret's name or ARN.
    #[arg(long, required_if_eq("source", "aws"))]
    pub secret_id: Option<String>,

    /// AWS: the Secrets Manager endpoint (LocalStack, moto); default from the AWS environment.
    #[arg(long)]
    pub endpoint_url: Option<String>,

    /// Vault: the secrets engine's mount (default `secret` for KV, `database` for roles).
    #[arg(long)]
    pub mount: Option<String>,

    /// Vault KV: the secret's path under the mount. File: the file or directory.
    #[arg(long, required_if_eq_any([("source", "vault-kv"), ("source", "file")]))]
    pub path: Option<String>,

    /// Vault database roles: the role's name.
    #[arg(long, required_if_eq_any([("source", "vault-dynamic"), ("source", "vault-static")]))]
    pub role: Option<String>,

    /// The username, where the secret holds only a password (AWS plain-string secret, a
    /// password file, Vault KV without a username field, the environment). rds-iam: the
    /// IAM-enabled database user; dsql: a custom database role (or `--admin`).
    #[arg(long, visible_alias = "user", required_if_eq("source", "rds-iam"))]
    pub username: Option<String>,

    /// rds-iam: the database endpoint the token is signed for (exactly as the client connects
    /// to it); dsql: the cluster endpoint.
    #[arg(long, required_if_eq_any([("source", "rds-iam"), ("source", "dsql")]))]
    pub host: Option<String>,

    /// rds-iam: the endpoint's port the token is signed for.
    #[arg(long, default_value_t = 5432)]
    pub port: u16,

    /// rds-iam, dsql: the database's region; default from the AWS environment (AWS_REGION).
    #[arg(long)]
    pub region: Option<String>,

    /// dsql: log in as the `admin` role (a DbConnectAdmin token) instead of `--user`.
    #[arg(long, conflicts_with = "username")]
    pub admin: bool,

    /// Env: the variable holding the username (default PGUSER).
    #[arg(long)]
    pub username_var: Option<String>,

    /// Env: the variable holding the password (default PGPASSWORD).
    #[arg(long)]
    pub password_var: Option<String>,

    /// Env: one variable holding RDS-style JSON instead.
    #[arg(long)]
    pub json_var: Option<String>,

    /// Also open one connection with the credential (and run `SELECT 1`): to this server,
    /// e.g. `postgres://db.internal:5432/app` (no user or password in it: they come from the
    /// source). Without it, the secret's own host, port and dbname where it has them.
    #[arg(long)]
    pub connect: bool,

    /// The server for `--connect`.
    #[arg(long, env = "CREDSWAP_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Fail when the credential expires within this long (e.g. 5m).
    #[arg(long, default_value = "1m", value_parser = crate::cli::parse_duration)]
    pub expiry_margin: Duration,

    /// Fail when the credential is older than this, unless the store says its own rotation
    /// schedule (Secrets Manager's rotation rules, a static role's rotation period).
    #[arg(long, default_value = "30days", value_parser = parse_long_duration)]
    pub max_age: Duration,

    /// --connect: TLS as libpq names it: disable, prefer (TLS when the server offers it),
    /// require, verify-ca (the certificate's chain must lead to --ca-file), verify-full (and
    /// name the host). prefer and require verify the chain too when --ca-file is given.
    /// Default prefer; require for rds-iam and dsql, which refuse disable and prefer (IAM
    /// authentication requires TLS).
    #[arg(long, value_parser = crate::cli::parse_sslmode)]
    pub sslmode: Option<credswap_rotate::SslMode>,

    /// --connect: a PEM file of the CA certificate(s) the server's certificate must lead to
    /// (libpq's sslrootcert). Needed by verify-ca and verify-full.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,

    /// AWS: fail (exit 9, "rotation stuck") when an AWSPENDING version older than this exists
    /// (a rotation that died part way); a younger one is reported as rotating.
    #[arg(long, default_value = "10m", value_parser = parse_long_duration)]
    pub stuck_after: Duration,

    /// How long reading the store and connecting may take, each.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub timeout: Duration,

    /// Print one JSON object instead of a line.
    #[arg(long)]
    pub json: bool,
}

impl CheckArgs {
    /// `--sslmode`, else the source's default: `require` for the minted sources, `prefer`.
    pub fn sslmode(&self) -> credswap_rotate::SslMode {
        self.sslmode.unwrap_or(if self.source.is_minted() {
            credswap_rotate::SslMode::Require
        } else {
            credswap_rotate::SslMode::Prefer
        })
    }
}

/// A duration of any length (`90days`, `12h`): rotation intervals are measured in days.
fn parse_long_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}`: {e}"))
}
