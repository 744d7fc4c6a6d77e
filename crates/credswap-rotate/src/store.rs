//! The Secrets Manager calls the protocol makes: DescribeSecret, GetSecretValue,
//! PutSecretValue and UpdateSecretVersionStage.

use std::collections::HashMap;

use aws_sdk_secretsmanager::Client;
use aws_smithy_types::DateTime;
use secrecy::ExposeSecret;

use crate::Error;
use crate::secret::SecretValue;

/// The stage of the version in use.
pub(crate) const CURRENT: &str = "AWSCURRENT";
/// The stage of the version being rotated in.
pub(crate) const PENDING: &str = "AWSPENDING";
/// The stage of the version rotated out.
pub(crate) const PREVIOUS: &str = "AWSPREVIOUS";

/// The versions of a secret and their stages (DescribeSecret's `VersionIdsToStages`).
#[derive(Debug, Default)]
pub(crate) struct Versions(HashMap<String, Vec<String>>);

impl Versions {
    /// The stages of the version `id` (`None` when the secret has no such version).
    pub(crate) fn stages(&self, id: &str) -> Option<&[String]> {
        self.0.get(id).map(Vec::as_slice)
    }

    /// Whether version `id` carries `stage`.
    pub(crate) fn has(&self, id: &str, stage: &str) -> bool {
        self.stages(id)
            .is_some_and(|stages| stages.iter().any(|s| s == stage))
    }

    /// The version other than `token` carrying `AWSPENDING` but not `AWSCURRENT`: another
    /// rotation in progress (a finished rotation may leave `AWSPENDING` on its now current
    /// version, which is no rotation in progress).
    pub(crate) fn pending_other_than(&self, token: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(id, stages)| {
                id.as_str() != token
                    && stages.iter().any(|s| s == PENDING)
                    && !stages.iter().any(|s| s == CURRENT)
            })
            .map(|(id, _)| id.as_str())
    }

    /// The version carrying `stage`, if any.
    pub(crate) fn with_stage(&self, stage: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(id, _)| id.as_str())
    }
}

/// DescribeSecret: the versions and their stages.
pub(crate) async fn describe(client: &Client, secret_id: &str) -> Result<Versions, Error> {
    let out = client
        .describe_secret()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| Error::store("DescribeSecret", format!("secret {secret_id}"), e))?;
    if out.rotation_enabled() == Some(false) {
        tracing::debug!(
            secret_id,
            "rotation is not enabled on the secret; rotating anyway"
        );
    }
    Ok(Versions(out.version_ids_to_stages.unwrap_or_default()))
}

/// GetSecretValue by stage and/or version id, parsed. Without a version id, always name the
/// stage: moto returns the old version for a request without either after
/// UpdateSecretVersionStage.
pub(crate) async fn get(
    client: &Client,
    secret_id: &str,
    stage: Option<&str>,
    version_id: Option<&str>,
) -> Result<SecretValue, Error> {
    Ok(get_dated(client, secret_id, stage, version_id).await?.0)
}

/// [`get`], and the version's `CreatedDate`.
pub(crate) async fn get_dated(
    client: &Client,
    secret_id: &str,
    stage: Option<&str>,
    version_id: Option<&str>,
) -> Result<(SecretValue, Option<DateTime>), Error> {
    let (value, what, created) = get_string(client, secret_id, stage, version_id).await?;
    Ok((SecretValue::parse(value.expose_secret(), &what)?, created))
}

/// GetSecretValue of a master secret (`AWSCURRENT`), parsed as a login.
pub(crate) async fn get_master(client: &Client, secret_id: &str) -> Result<SecretValue, Error> {
    let (value, what, _) = get_string(client, secret_id, Some(CURRENT), None)
        .await
        .map_err(Error::of_master)?;
    SecretValue::parse_login(
        value.expose_secret(),
        &what.replacen("secret", "master secret", 1),
    )
}

/// GetSecretValue: the secret string, how to name it in errors, and the version's
/// `CreatedDate`.
async fn get_string(
    client: &Client,
    secret_id: &str,
    stage: Option<&str>,
    version_id: Option<&str>,
) -> Result<(secrecy::SecretString, String, Option<DateTime>), Error> {
    let what = match (stage, version_id) {
        (Some(stage), Some(id)) => {
            format!("the {stage} value of secret {secret_id} (version {id})")
        }
        (Some(stage), None) => format!("the {stage} value of secret {secret_id}"),
        (None, Some(id)) => format!("version {id} of secret {secret_id}"),
        (None, None) => format!("secret {secret_id}"),
    };
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .set_version_stage(stage.map(str::to_owned))
        .set_version_id(version_id.map(str::to_owned))
        .send()
        .await
        .map_err(|e| Error::store("GetSecretValue", what.clone(), e))?;
    let Some(value) = out.secret_string() else {
        return Err(Error::malformed(format!(
            "{what} has no SecretString (a binary secret cannot be rotated)"
        )));
    };
    Ok((
        secrecy::SecretString::from(value.to_owned()),
        what,
        out.created_date().copied(),
    ))
}

/// PutSecretValue of `secret` under version id `token` with the stage `AWSPENDING`.
pub(crate) async fn put_pending(
    client: &Client,
    secret_id: &str,
    token: &str,
    secret: &SecretValue,
) -> Result<(), Error> {
    client
        .put_secret_value()
        .secret_id(secret_id)
        .client_request_token(token)
        .secret_string(secret.to_json().expose_secret())
        .version_stages(PENDING)
        .send()
        .await
        .map_err(|e| {
            Error::store(
                "PutSecretValue",
                format!("secret {secret_id} (version {token})"),
                e,
            )
        })?;
    Ok(())
}

/// UpdateSecretVersionStage: moves `stage` to version `to` and/or removes it from `from`.
pub(crate) async fn update_stage(
    client: &Client,
    secret_id: &str,
    stage: &str,
    to: Option<&str>,
    from: Option<&str>,
) -> Result<(), Error> {
    client
        .update_secret_version_stage()
        .secret_id(secret_id)
        .version_stage(stage)
        .set_move_to_version_id(to.map(str::to_owned))
        .set_remove_from_version_id(from.map(str::to_owned))
        .send()
        .await
        .map_err(|e| {
            Error::store(
                "UpdateSecretVersionStage",
                format!("stage {stage} of secret {secret_id}"),
                e,
            )
        })?;
    Ok(())
}
