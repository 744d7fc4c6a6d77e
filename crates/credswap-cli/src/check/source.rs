//! The source `credswap check` reads through ([`build_source`]), and where the secret says its
//! database is.

use std::path::PathBuf;
use std::sync::Arc;

use credswap_core::CredentialSource;

use super::{CheckArgs, CheckSource};

/// Host, port and dbname, as a secret names them.
pub(super) type Where = (Option<String>, Option<u16>, Option<String>);

/// A source and, where the secret says, where its database is.
pub(super) struct Built {
    pub(super) source: Arc<dyn CredentialSource>,
    /// host, port, dbname from the secret the provider's fetch read (AWS, file JSON): the
    /// sources keep them from their last read, so nothing is fetched twice.
    pub(super) details: Box<dyn Fn() -> Option<Where> + Send + Sync>,
    /// The AWS source, for its pending version.
    pub(super) aws: Option<Arc<credswap_aws::SecretsManagerSource>>,
}

/// No details: the source's secrets never name a server.
fn no_details() -> Box<dyn Fn() -> Option<Where> + Send + Sync> {
    Box::new(|| None)
}

pub(super) async fn build_source(args: &CheckArgs) -> Result<Built, String> {
    match args.source {
        CheckSource::Aws => {
            let id = args.secret_id.clone().ok_or("--secret-id is required")?;
            let mut builder = credswap_aws::SecretsManagerSource::builder(id);
            if let Some(url) = &args.endpoint_url {
                builder = builder.endpoint_url(url.clone());
            }
            if let Some(user) = &args.username {
                builder = builder.username(user.clone());
            }
            let source = Arc::new(builder.build_from_env().await.map_err(|e| e.to_string())?);
            let read = Arc::clone(&source);
            Ok(Built {
                aws: Some(Arc::clone(&source)),
                source,
                details: Box::new(move || {
                    read.details().map(|d| {
                        (
                            d.host().map(str::to_owned),
                            d.port(),
                            d.dbname().map(str::to_owned),
                        )
                    })
                }),
            })
        }
        CheckSource::VaultKv | CheckSource::VaultDynamic | CheckSource::VaultStatic => {
            use credswap_vault::VaultSource;
            if args.username.is_some() && args.source != CheckSource::VaultKv {
                return Err(
                    "--username applies to vault-kv only (a database role's credential names its user)"
                        .into(),
                );
            }
            let source = match args.source {
                CheckSource::VaultKv => {
                    let mut builder = VaultSource::kv2(
                        args.mount.clone().unwrap_or_else(|| "secret".into()),
                        args.path.clone().ok_or("--path is required")?,
                    );
                    if let Some(user) = &args.username {
                        builder = builder.username(user.clone());
                    }
                    vault_source(builder, args)?
                }
                // One read, no pool: the lease margin only has to admit --expiry-margin,
                // which here is the alert's threshold (the provider refuses a longer one).
                CheckSource::VaultDynamic => vault_source(
                    VaultSource::dynamic_role(
                        args.mount.clone().unwrap_or_else(|| "database".into()),
                        args.role.clone().ok_or("--role is required")?,
                    )
                    .lease_margin(args.expiry_margin.max(credswap_vault::DEFAULT_LEASE_MARGIN))
                    .revoke_on_drop(true),
                    args,
                )?,
                _ => vault_source(
                    VaultSource::static_role(
                        args.mount.clone().unwrap_or_else(|| "database".into()),
                        args.role.clone().ok_or("--role is required")?,
                    ),
                    args,
                )?,
            };
            Ok(Built {
                source: Arc::new(source),
                details: no_details(),
                aws: None,
            })
        }
        CheckSource::File => {
            let path = PathBuf::from(args.path.clone().ok_or("--path is required")?);
            let mut builder = credswap_file::FileSource::builder(path);
            if let Some(user) = &args.username {
                builder = builder.username(user.clone());
            }
            let source = Arc::new(builder.build().map_err(|e| e.to_string())?);
            let read = Arc::clone(&source);
            Ok(Built {
                aws: None,
                source,
                details: Box::new(move || {
                    read.details().map(|d| {
                        (
                            d.host().map(str::to_owned),
                            d.port(),
                            d.dbname().map(str::to_owned),
                        )
                    })
                }),
            })
        }
        CheckSource::RdsIam => {
            let host = args.host.clone().ok_or("--host is required")?;
            let mut builder = credswap_aws::RdsIamSource::builder()
                .hostname(host.clone())
                .port(args.port)
                .username(args.username.clone().ok_or("--user is required")?);
            if let Some(region) = &args.region {
                builder = builder.region(region.clone());
            }
            let source = builder.build_from_env().await.map_err(|e| e.to_string())?;
            let port = args.port;
            Ok(Built {
                source: Arc::new(source),
                details: Box::new(move || Some((Some(host.clone()), Some(port), None))),
                aws: None,
            })
        }
        CheckSource::Dsql => {
            let host = args.host.clone().ok_or("--host is required")?;
            let mut builder = credswap_aws::DsqlTokenSource::builder().hostname(host.clone());
            builder = match (&args.username, args.admin) {
                (_, true) => builder.admin(),
                (Some(role), false) => builder.username(role.clone()),
                (None, false) => {
                    return Err("--source dsql needs --admin or --user ROLE".into());
                }
            };
            if let Some(region) = &args.region {
                builder = builder.region(region.clone());
            }
            let source = builder.build_from_env().await.map_err(|e| e.to_string())?;
            Ok(Built {
                source: Arc::new(source),
                details: Box::new(move || {
                    Some((Some(host.clone()), Some(5432), Some("postgres".into())))
                }),
                aws: None,
            })
        }
        CheckSource::Env => {
            let mut builder = credswap_file::EnvSource::builder();
            if let Some(var) = &args.username_var {
                builder = builder.username_field(var.clone());
            }
            if let Some(user) = &args.username {
                builder = builder.username(user.clone());
            }
            if let Some(var) = &args.password_var {
                builder = builder.password_field(var.clone());
            }
            if let Some(var) = &args.json_var {
                builder = builder.json_var(var.clone());
            }
            let source = builder.build().map_err(|e| e.to_string())?;
            Ok(Built {
                source: Arc::new(source),
                details: no_details(),
                aws: None,
            })
        }
    }
}

/// A Vault source of any kind, with the address and token from the environment.
fn vault_source<K: credswap_vault::kind::SourceKind>(
    builder: credswap_vault::VaultSourceBuilder<K>,
    args: &CheckArgs,
) -> Result<credswap_vault::VaultSource, String> {
    builder
        .from_env()
        .timeout(args.timeout)
        .build()
        .map_err(|e| e.to_string())
}
