//! The secret stores the "store misbehaves" cases drive: the in-memory one and, with the test
//! kit's `aws` feature, a real Secrets Manager API (moto) read through `credswap-aws`.

use async_trait::async_trait;
use credswap_core::{Credential, MemorySource};

/// What a case does to a store mid-rotation.
#[async_trait]
pub(crate) trait Store: Send + Sync {
    /// For messages.
    fn name(&self) -> &'static str;

    /// createSecret: stages `credential` as the store's pending version (`AWSPENDING`).
    async fn stage_pending(&self, credential: &Credential);

    /// The pending version is removed (the rotation was abandoned or reverted).
    async fn drop_pending(&self);
}

/// The in-memory store.
pub(crate) struct Memory(pub(crate) MemorySource);

#[async_trait]
impl Store for Memory {
    fn name(&self) -> &'static str {
        "the in-memory store"
    }

    async fn stage_pending(&self, credential: &Credential) {
        self.0.set_pending(Some(credential.clone()));
    }

    async fn drop_pending(&self) {
        self.0.set_pending(None);
    }
}

#[cfg(feature = "aws")]
pub(crate) use secrets_manager::secrets_manager_role;

#[cfg(feature = "aws")]
mod secrets_manager {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use credswap_aws::SecretsManagerSource;
    use credswap_aws::aws_sdk_secretsmanager::Client;
    use credswap_aws::aws_sdk_secretsmanager::error::DisplayErrorContext;
    use credswap_core::secrecy::ExposeSecret;
    use credswap_core::{Credential, Policy, RotatingCredentials};

    use super::Store;
    use crate::{TestMoto, TestPostgres, random_password, unique_name};

    /// A secret in a real Secrets Manager API (a moto server of its own), in the RDS JSON
    /// format, rotated by hand the way a rotation function would.
    pub(crate) struct SecretsManager {
        _moto: TestMoto,
        client: Client,
        secret_id: String,
        pending: Mutex<Option<String>>,
    }

    fn json(pg: &TestPostgres, credential: &Credential) -> String {
        serde_json::json!({
            "engine": "postgres",
            "host": pg.server_host(),
            "port": pg.server_port(),
            "dbname": pg.database(),
            "username": credential.username(),
            "password": credential.password().expose_secret(),
        })
        .to_string()
    }

    /// A login role with a random password, a secret holding it on a new moto server, and a
    /// provider over `SecretsManagerSource`; returns `(role, password, store, provider)`.
    ///
    /// # Panics
    ///
    /// When moto, the role, the secret or the provider cannot be set up (the message says how
    /// to get moto when it is missing).
    pub(crate) async fn secrets_manager_role(
        pg: &TestPostgres,
        policy: Policy,
    ) -> (String, String, SecretsManager, RotatingCredentials) {
        let moto = match TestMoto::start().await {
            Ok(moto) => moto,
            Err(e) => panic!("starting moto_server failed: {e}"),
        };
        let client = Client::new(&moto.sdk_config().await);
        let role = unique_name("sm");
        let password = random_password();
        pg.create_login_role(&role, &password)
            .await
            .expect("create role");
        let secret_id = format!("credswap-conformance/{role}");
        let value = json(pg, &Credential::new(role.clone(), password.clone()));
        if let Err(e) = client
            .create_secret()
            .name(&secret_id)
            .secret_string(value)
            .send()
            .await
        {
            panic!("CreateSecret failed: {}", DisplayErrorContext(&e));
        }
        let source = SecretsManagerSource::builder(&secret_id)
            .client(client.clone())
            .build()
            .expect("SecretsManagerSource");
        let credentials = RotatingCredentials::new(source, policy)
            .await
            .expect("provider over Secrets Manager");
        let store = SecretsManager {
            _moto: moto,
            client,
            secret_id,
            pending: Mutex::new(None),
        };
        (role, password, store, credentials)
    }

    impl SecretsManager {
        fn pending(&self) -> std::sync::MutexGuard<'_, Option<String>> {
            self.pending.lock().unwrap_or_else(|p| p.into_inner())
        }
    }

    #[async_trait]
    impl Store for SecretsManager {
        fn name(&self) -> &'static str {
            "Secrets Manager (moto)"
        }

        async fn stage_pending(&self, credential: &Credential) {
            // The JSON's host fields do not matter to the source; the credential does.
            let value = serde_json::json!({
                "engine": "postgres",
                "username": credential.username(),
                "password": credential.password().expose_secret(),
            })
            .to_string();
            let version = match self
                .client
                .put_secret_value()
                .secret_id(&self.secret_id)
                .client_request_token(uuid_like())
                .secret_string(value)
                .version_stages("AWSPENDING")
                .send()
                .await
            {
                Ok(out) => out.version_id().map(str::to_owned),
                Err(e) => panic!(
                    "PutSecretValue (AWSPENDING) failed: {}",
                    DisplayErrorContext(&e)
                ),
            };
            *self.pending() = version;
        }

        async fn drop_pending(&self) {
            let Some(version) = self.pending().take() else {
                return;
            };
            if let Err(e) = self
                .client
                .update_secret_version_stage()
                .secret_id(&self.secret_id)
                .version_stage("AWSPENDING")
                .remove_from_version_id(&version)
                .send()
                .await
            {
                panic!(
                    "UpdateSecretVersionStage (remove AWSPENDING) failed: {}",
                    DisplayErrorContext(&e)
                );
            }
        }
    }

    /// A ClientRequestToken: 32 random hex digits in the UUID layout (AWS wants 32-64 chars).
    fn uuid_like() -> String {
        let digits = format!("{:032x}", rand::random::<u128>());
        format!(
            "{}-{}-{}-{}-{}",
            &digits[0..8],
            &digits[8..12],
            &digits[12..16],
            &digits[16..20],
            &digits[20..32]
        )
    }
}
