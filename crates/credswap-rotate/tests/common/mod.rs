//! A real moto and a real PostgreSQL (scram-sha-256) per test, and helpers over them.

#![allow(dead_code)]

use std::collections::HashMap;

use aws_sdk_secretsmanager::Client;
use credswap_testkit::{TestMoto, TestPostgres, random_password, unique_name};
use serde_json::{Value, json};
use tokio_postgres::NoTls;

/// One test's world.
pub struct World {
    pub pg: TestPostgres,
    pub moto: TestMoto,
    pub client: Client,
}

pub async fn world() -> World {
    let (pg, moto) = tokio::join!(TestPostgres::start(), TestMoto::start());
    let pg = pg.expect("PostgreSQL starts");
    let moto = moto.expect("moto starts");
    let config = moto.sdk_config().await;
    let client = Client::new(&config);
    World { pg, moto, client }
}

impl World {
    /// The secret JSON AWS's templates use for `user`, plus an extra field that must survive.
    pub fn secret_json(&self, user: &str, password: &str) -> Value {
        json!({
            "engine": "postgres",
            "host": self.pg.host(),
            "port": self.pg.port(),
            "dbname": self.pg.database(),
            "username": user,
            "password": password,
            "note": "kept as is",
        })
    }

    /// Creates a secret; returns its ARN.
    pub async fn create_secret(&self, name: &str, value: &str) -> String {
        self.client
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .expect("CreateSecret")
            .arn()
            .expect("an ARN")
            .to_owned()
    }

    /// A login role with a random password, and a secret for it; returns (role, password,
    /// secret name).
    pub async fn single_user(&self) -> (String, String, String) {
        let role = unique_name("app");
        let password = random_password();
        self.pg.create_login_role(&role, &password).await.unwrap();
        let name = format!("rotate/{role}");
        self.create_secret(&name, &self.secret_json(&role, &password).to_string())
            .await;
        (role, password, name)
    }

    /// Version id -> stages.
    pub async fn stages(&self, secret: &str) -> HashMap<String, Vec<String>> {
        self.client
            .describe_secret()
            .secret_id(secret)
            .send()
            .await
            .expect("DescribeSecret")
            .version_ids_to_stages
            .unwrap_or_default()
    }

    /// The version ids carrying `stage`.
    pub async fn versions_with(&self, secret: &str, stage: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .stages(secret)
            .await
            .into_iter()
            .filter(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids
    }

    /// The value at `stage`.
    pub async fn value(&self, secret: &str, stage: &str) -> Value {
        let out = self
            .client
            .get_secret_value()
            .secret_id(secret)
            .version_stage(stage)
            .send()
            .await
            .expect("GetSecretValue");
        serde_json::from_str(out.secret_string().unwrap()).unwrap()
    }

    /// Whether `user`/`password` logs in.
    pub async fn logs_in(&self, user: &str, password: &str) -> bool {
        match self.pg.config_for(user, password).connect(NoTls).await {
            Ok((client, connection)) => {
                drop(client);
                let _ = connection.await;
                true
            }
            Err(e) => {
                assert_eq!(
                    e.code(),
                    Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
                    "{e}"
                );
                false
            }
        }
    }

    /// An open session of `user` (its connection driven by a task).
    pub async fn session(&self, user: &str, password: &str) -> tokio_postgres::Client {
        let (client, connection) = self
            .pg
            .config_for(user, password)
            .connect(NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

/// The `username` and `password` of a secret value.
pub fn login(value: &Value) -> (String, String) {
    (
        value["username"].as_str().unwrap().to_owned(),
        value["password"].as_str().unwrap().to_owned(),
    )
}
