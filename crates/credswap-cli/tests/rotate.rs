//! `credswap rotate` end to end: the built binary against a real moto and a real PostgreSQL.

use std::process::{Command, Output};

use credswap_aws::aws_sdk_secretsmanager::Client;
use credswap_testkit::{TestMoto, TestPostgres, random_password, unique_name};
use serde_json::{Value, json};
use tokio_postgres::NoTls;

struct World {
    pg: TestPostgres,
    moto: TestMoto,
    client: Client,
}

async fn world() -> World {
    let (pg, moto) = tokio::join!(TestPostgres::start(), TestMoto::start());
    let (pg, moto) = (pg.expect("PostgreSQL starts"), moto.expect("moto starts"));
    let config = moto.sdk_config().await;
    let client = Client::new(&config);
    World { pg, moto, client }
}

impl World {
    /// A login role and its RDS-style secret; returns (role, password, secret name).
    async fn single_user(&self) -> (String, String, String) {
        let role = unique_name("cli");
        let password = random_password();
        self.pg.create_login_role(&role, &password).await.unwrap();
        let name = format!("cli/{role}");
        self.create_secret(&name, &self.secret_json(&role, &password))
            .await;
        (role, password, name)
    }

    fn secret_json(&self, user: &str, password: &str) -> Value {
        json!({
            "engine": "postgres",
            "host": self.pg.host(),
            "port": self.pg.port(),
            "dbname": self.pg.database(),
            "username": user,
            "password": password,
        })
    }

    async fn create_secret(&self, name: &str, value: &Value) {
        self.client
            .create_secret()
            .name(name)
            .secret_string(value.to_string())
            .send()
            .await
            .expect("CreateSecret");
    }

    async fn current(&self, secret: &str) -> Value {
        let out = self
            .client
            .get_secret_value()
            .secret_id(secret)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .expect("GetSecretValue");
        serde_json::from_str(out.secret_string().unwrap()).unwrap()
    }

    async fn logs_in(&self, user: &str, password: &str) -> bool {
        match self.pg.config_for(user, password).connect(NoTls).await {
            Ok((client, connection)) => {
                drop(client);
                let _ = connection.await;
                true
            }
            Err(_) => false,
        }
    }

    /// Runs `credswap rotate <args> --endpoint-url <moto>` with dummy AWS credentials in the
    /// environment (and nothing else of the caller's AWS setup).
    async fn credswap(&self, args: &[&str]) -> (Output, String, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_credswap"));
        command
            .arg("rotate")
            .args(args)
            .args(["--endpoint-url", &self.moto.endpoint_url()]);
        for (key, _) in std::env::vars() {
            if key.starts_with("AWS_") {
                command.env_remove(key);
            }
        }
        command
            .env("AWS_REGION", self.moto.region())
            .env("AWS_ACCESS_KEY_ID", self.moto.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", self.moto.secret_access_key())
            .env("AWS_CONFIG_FILE", "/nonexistent/credswap-test")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credswap-test")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("run credswap");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output, stdout, stderr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_user_rotation_changes_the_password_and_prints_none() {
    let w = world().await;
    let (role, old_password, secret) = w.single_user().await;

    let (output, stdout, stderr) = w
        .credswap(&["--secret-id", &secret, "--pause-before-finish", "200ms"])
        .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let current = w.current(&secret).await;
    let new_password = current["password"].as_str().unwrap().to_owned();
    assert_eq!(current["username"], role.as_str());
    assert_ne!(new_password, old_password);
    assert!(
        w.logs_in(&role, &new_password).await,
        "the new password logs in"
    );
    assert!(
        !w.logs_in(&role, &old_password).await,
        "the old one does not"
    );

    assert!(
        stdout.contains(&format!("user:         {role} -> {role}")),
        "{stdout}"
    );
    assert!(stdout.contains("created role: no"), "{stdout}");
    assert!(stdout.contains("finishSecret done"), "{stdout}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains(&new_password), "a password printed:\n{text}");
        assert!(!text.contains(&old_password), "a password printed:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_users_create_the_clone_and_steps_run_one_at_a_time() {
    let w = world().await;
    let (role, password, secret) = w.single_user().await;
    let admin = w.pg.admin_config();
    let admin_password = String::from_utf8_lossy(admin.get_password().unwrap()).into_owned();
    let master = format!("cli/master-{role}");
    w.create_secret(
        &master,
        &json!({"username": admin.get_user().unwrap(), "password": admin_password}),
    )
    .await;

    // Without a master login: a usage error.
    let (output, _, stderr) = w
        .credswap(&["--secret-id", &secret, "--strategy", "alternating-users"])
        .await;
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--master-secret"), "{stderr}");

    // One step at a time, as a rotation function runs them.
    let token = "11111111-2222-4333-8444-555555555555";
    let mut printed = String::new();
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let (output, stdout, stderr) = w
            .credswap(&[
                "--secret-id",
                &secret,
                "--strategy",
                "alternating-users",
                "--master-secret",
                &master,
                "--step",
                step,
                "--token",
                token,
            ])
            .await;
        assert_eq!(output.status.code(), Some(0), "{step}: {stdout}\n{stderr}");
        assert!(
            stdout.starts_with(&format!("{step} of {secret}: done")),
            "{step}: {stdout}"
        );
        printed.push_str(&stdout);
        printed.push_str(&stderr);
    }
    let clone = format!("{role}_clone");
    assert!(printed.contains("created role: yes"), "{printed}");
    let current = w.current(&secret).await;
    assert_eq!(current["username"], clone.as_str());
    let clone_password = current["password"].as_str().unwrap().to_owned();
    assert!(w.logs_in(&clone, &clone_password).await);
    assert!(
        w.logs_in(&role, &password).await,
        "the previous user still logs in"
    );

    // The same step again with the same token changes nothing.
    let (output, stdout, _) = w
        .credswap(&[
            "--secret-id",
            &secret,
            "--strategy",
            "alternating-users",
            "--master-secret",
            &master,
            "--step",
            "finishSecret",
            "--token",
            token,
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("already done"), "{stdout}");

    // A whole rotation back to the original user, with a session of it open: `wait` times out.
    let _session = {
        let (client, connection) =
            w.pg.config_for(&role, &password)
                .connect(NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client
    };
    let (output, stdout, stderr) = w
        .credswap(&[
            "--secret-id",
            &secret,
            "--strategy",
            "alternating-users",
            "--master-secret",
            &master,
            "--sessions",
            "wait=300ms",
        ])
        .await;
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("setSecret"), "{stderr}");
    assert!(stderr.contains("--sessions terminate"), "{stderr}");
    printed.push_str(&stdout);
    printed.push_str(&stderr);

    // With `terminate` it goes through.
    let (output, stdout, stderr) = w
        .credswap(&[
            "--secret-id",
            &secret,
            "--strategy",
            "alternating-users",
            "--master-secret",
            &master,
            "--sessions",
            "terminate",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("user:         {clone} -> {role}")),
        "{stdout}"
    );
    assert!(stdout.contains("1 logged in as"), "{stdout}");
    printed.push_str(&stdout);
    printed.push_str(&stderr);
    let current = w.current(&secret).await;
    let new_password = current["password"].as_str().unwrap();
    assert!(w.logs_in(&role, new_password).await);

    for secret_text in [
        &password,
        &clone_password,
        &admin_password,
        &new_password.to_owned(),
    ] {
        assert!(
            !printed.contains(secret_text.as_str()),
            "a password printed:\n{printed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_exits_1_with_a_hint() {
    let w = world().await;
    let (output, stdout, stderr) = w.credswap(&["--secret-id", "cli/no-such-secret"]).await;
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("createSecret"), "{stderr}");
    assert!(stderr.contains("hint: check --secret-id"), "{stderr}");
}
