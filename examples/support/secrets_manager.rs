//! What the three `secrets_manager_*` examples share: a local Secrets Manager (moto) holding an
//! RDS-style secret for a role on an embedded PostgreSQL, the source that reads it, a workload,
//! and single-user rotations by `credswap::rotate::Rotator`, as a rotation Lambda would run them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use credswap::aws::SecretsManagerSource;
use credswap::aws::aws_sdk_secretsmanager::Client;
use credswap::contract::AdapterStats;
use credswap::rotate::{Rotator, Strategy};
use credswap::{Policy, RotatingCredentials};
use credswap_testkit::{TestMoto, TestPostgres, random_password, unique_name};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The database, the secret store and the secret.
pub struct Demo {
    _pg: TestPostgres,
    _moto: TestMoto,
    client: Client,
    pub secret_id: String,
}

impl Demo {
    /// An embedded PostgreSQL (or `CREDSWAP_TEST_ADMIN_URL`), a moto server, a login role and a
    /// secret `demo/<role>` holding its RDS-style JSON.
    pub async fn start() -> Result<Self, BoxError> {
        let pg = TestPostgres::from_env().await?;
        let moto = TestMoto::start().await?;
        let role = unique_name("web");
        let password = random_password();
        pg.create_login_role(&role, &password).await?;
        let sdk = moto.sdk_config().await;
        let client = Client::new(&sdk);
        let secret_id = format!("demo/{role}");
        let value = serde_json::json!({
            "engine": "postgres",
            "host": pg.host(),
            "port": pg.port(),
            "dbname": pg.database(),
            "username": role,
            "password": password,
        });
        client
            .create_secret()
            .name(&secret_id)
            .secret_string(value.to_string())
            .send()
            .await?;
        Ok(Self {
            _pg: pg,
            _moto: moto,
            client,
            secret_id,
        })
    }

    /// The provider over the secret, as an application builds it (in production:
    /// `SecretsManagerSource::builder(id).build_from_env().await?`).
    pub async fn credentials(
        &self,
    ) -> Result<(SecretsManagerSource, RotatingCredentials), BoxError> {
        let source = || {
            SecretsManagerSource::builder(self.secret_id.clone())
                .client(self.client.clone())
                .build()
        };
        let policy = Policy::builder()
            .refresh_interval(Duration::from_millis(250))
            .build()?;
        let credentials = RotatingCredentials::new(source()?, policy).await?;
        // A second reader of the same secret, for its host, port and database.
        Ok((source()?, credentials))
    }

    /// Three single-user rotations, a second apart, each with a 500 ms window between setSecret
    /// (the database has the new password) and finishSecret (`AWSCURRENT` says it), while
    /// `work` runs on 8 tasks; returns how many calls succeeded and failed.
    pub async fn rotate_under_load<F, Fut>(&self, work: F) -> Result<(u64, u64), BoxError>
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send,
    {
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let done = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (work, ok, failed, done) =
                    (work.clone(), ok.clone(), failed.clone(), done.clone());
                tokio::spawn(async move {
                    while !done.load(Ordering::Relaxed) {
                        match work().await {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        let rotator = Rotator::new(
            self.client.clone(),
            self.secret_id.clone(),
            Strategy::SingleUser,
        )
        .pause_before_finish(Duration::from_millis(500));
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let report = rotator.rotate().await?;
            println!("rotated {} (token {})", report.username, report.token);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        done.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await?;
        }
        Ok((ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed)))
    }
}

/// Prints what happened; an error when a query failed.
pub fn report(
    (ok, failed): (u64, u64),
    adapter: AdapterStats,
    credentials: &RotatingCredentials,
) -> Result<(), BoxError> {
    println!("{ok} queries, {failed} failed; {adapter:?}");
    println!("{:?}", credentials.stats());
    if failed > 0 {
        return Err(format!("{failed} queries failed").into());
    }
    Ok(())
}
