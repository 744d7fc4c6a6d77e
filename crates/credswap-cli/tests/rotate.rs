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

    /// The version id carrying AWSPENDING, if any.
    async fn pending(&self, secret: &str) -> Option<String> {
        self.client
            .describe_secret()
            .secret_id(secret)
            .send()
            .await
            .expect("DescribeSecret")
            .version_ids_to_stages
            .unwrap_or_default()
            .into_iter()
            .find(|(_, stages)| stages.iter().any(|s| s == "AWSPENDING"))
            .map(|(id, _)| id)
    }

    /// The version id carrying `stage`.
    async fn version_with(&self, secret: &str, stage: &str) -> String {
        self.client
            .describe_secret()
            .secret_id(secret)
            .send()
            .await
            .expect("DescribeSecret")
            .version_ids_to_stages
            .unwrap_or_default()
            .into_iter()
            .find(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(id, _)| id)
            .unwrap_or_else(|| panic!("no {stage} version"))
    }

    /// Stores `value` as a new AWSPENDING version under `token`, as a rotation function's
    /// createSecret does.
    async fn put_pending(&self, secret: &str, token: &str, value: &Value) {
        self.client
            .put_secret_value()
            .secret_id(secret)
            .client_request_token(token)
            .secret_string(value.to_string())
            .version_stages("AWSPENDING")
            .send()
            .await
            .expect("PutSecretValue");
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

    // Its pending version stays: a new rotation does not take it over (exit 3) ...
    let failed = w
        .pending(&secret)
        .await
        .expect("the failed rotation's version");
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
    assert_eq!(output.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("--token {failed}")), "{stderr}");

    // ... and resumed with its token and `terminate` it goes through.
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
            "--token",
            &failed,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_master_secret_is_named_in_the_hint() {
    let w = world().await;
    let (_, _, secret) = w.single_user().await;
    let (output, stdout, stderr) = w
        .credswap(&[
            "--secret-id",
            &secret,
            "--strategy",
            "alternating-users",
            "--master-secret",
            "cli/no-such-master",
        ])
        .await;
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("hint: check --master-secret cli/no-such-master"),
        "{stderr}"
    );
    assert!(!stderr.contains("--secret-id"), "{stderr}");
    assert!(
        stderr.contains("master secret cli/no-such-master"),
        "{stderr}"
    );
}

/// A rotation function died between setSecret and finishSecret: the database has the pending
/// version's password, AWSCURRENT no longer logs in. `credswap rotate` must not orphan it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_rotation_is_not_taken_over_and_a_finished_token_is_refused() {
    let w = world().await;
    let (role, old_password, secret) = w.single_user().await;
    let lambda_token = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    let lambda_password = random_password();
    w.put_pending(
        &secret,
        lambda_token,
        &w.secret_json(&role, &lambda_password),
    )
    .await;
    w.pg.set_password(&role, &lambda_password).await.unwrap();
    let mut printed = String::new();

    // Refused, exit 3, naming the secret and the other version; nothing changes.
    let (output, stdout, stderr) = w.credswap(&["--secret-id", &secret]).await;
    assert_eq!(output.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&secret) && stderr.contains(lambda_token),
        "{stderr}"
    );
    assert!(stderr.contains("rotation in progress"), "{stderr}");
    assert!(
        stderr.contains(&format!("--token {lambda_token}")),
        "{stderr}"
    );
    printed.push_str(&stdout);
    printed.push_str(&stderr);
    assert_eq!(w.pending(&secret).await.as_deref(), Some(lambda_token));
    assert!(w.logs_in(&role, &lambda_password).await);

    // Finishing it with its token works: setSecret is skipped, its password becomes current.
    let (output, stdout, stderr) = w
        .credswap(&["--secret-id", &secret, "--token", lambda_token])
        .await;
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("setSecret already done"), "{stdout}");
    printed.push_str(&stdout);
    printed.push_str(&stderr);
    assert_eq!(
        w.current(&secret).await["password"],
        lambda_password.as_str()
    );

    // The same token again: its rotation finished (AWSCURRENT), exit 4.
    let (output, stdout, stderr) = w
        .credswap(&["--secret-id", &secret, "--token", lambda_token])
        .await;
    assert_eq!(output.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(stderr.contains("already finished"), "{stderr}");
    assert!(stderr.contains("AWSCURRENT"), "{stderr}");
    printed.push_str(&stdout);
    printed.push_str(&stderr);

    // A new rotation; then the old token is AWSPREVIOUS: exit 4, and the database keeps the
    // newest password (no rotation back to a retired one).
    let (output, stdout, stderr) = w.credswap(&["--secret-id", &secret]).await;
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    printed.push_str(&stdout);
    printed.push_str(&stderr);
    assert_eq!(w.version_with(&secret, "AWSPREVIOUS").await, lambda_token);
    let newest = w.current(&secret).await["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let (output, stdout, stderr) = w
        .credswap(&["--secret-id", &secret, "--token", lambda_token])
        .await;
    assert_eq!(output.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(stderr.contains("AWSPREVIOUS"), "{stderr}");
    assert!(stderr.contains("retired password"), "{stderr}");
    printed.push_str(&stdout);
    printed.push_str(&stderr);
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let (output, stdout, stderr) = w
            .credswap(&[
                "--secret-id",
                &secret,
                "--step",
                step,
                "--token",
                lambda_token,
            ])
            .await;
        assert_eq!(output.status.code(), Some(4), "{step}: {stdout}\n{stderr}");
        printed.push_str(&stdout);
        printed.push_str(&stderr);
    }
    assert!(w.logs_in(&role, &newest).await);
    assert!(!w.logs_in(&role, &lambda_password).await);
    assert_eq!(w.pending(&secret).await, None);

    // A rotation function died after createSecret (no database change): --takeover replaces it.
    let dead_token = "ffffffff-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    w.put_pending(
        &secret,
        dead_token,
        &w.secret_json(&role, &random_password()),
    )
    .await;
    let (output, stdout, stderr) = w.credswap(&["--secret-id", &secret]).await;
    assert_eq!(output.status.code(), Some(3), "{stdout}\n{stderr}");
    let (output, stdout, stderr) = w.credswap(&["--secret-id", &secret, "--takeover"]).await;
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    printed.push_str(&stdout);
    printed.push_str(&stderr);
    let current = w.current(&secret).await;
    assert!(
        w.logs_in(&role, current["password"].as_str().unwrap())
            .await
    );
    assert_eq!(w.pending(&secret).await, None);

    for password in [&old_password, &lambda_password, &newest] {
        assert!(
            !printed.contains(password.as_str()),
            "a password printed:\n{printed}"
        );
    }
}

/// `--sslmode verify-full --ca-file` rotates on a cluster that turns plaintext logins away; a
/// plaintext rotation there is a pg_hba.conf rejection: exit 5 at once, with a hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_over_verify_full_tls_and_a_pg_hba_rejection_exits_5() {
    let (pg, moto) = tokio::join!(TestPostgres::start_tls(), TestMoto::start());
    let (pg, moto) = (pg.expect("a TLS cluster"), moto.expect("moto starts"));
    let config = moto.sdk_config().await;
    let w = World {
        client: Client::new(&config),
        pg,
        moto,
    };
    let tls = w.pg.tls().expect("TLS").clone();
    let ca_file = tls
        .ca_cert_path()
        .to_str()
        .expect("a UTF-8 path")
        .to_owned();
    let role = unique_name("cli");
    let password = random_password();
    w.pg.create_login_role(&role, &password).await.unwrap();
    let secret = format!("cli/{role}");
    // The secret names the host the certificate is for.
    let mut value = w.secret_json(&role, &password);
    value["host"] = json!(tls.server_name());
    w.create_secret(&secret, &value).await;
    let logs_in_over_tls = |password: String| {
        let mut config = w.pg.tls_base_config();
        config.user(&role).password(password);
        let database = credswap_rotate::Database::rustls(
            credswap_rotate::SslMode::VerifyFull,
            Some(tls.ca_cert_path()),
        )
        .expect("a database");
        async move {
            match database.connect(config).await {
                Ok((client, connection)) => {
                    drop(client);
                    let _ = connection.await;
                    true
                }
                Err(_) => false,
            }
        }
    };

    // Plaintext: rejected by pg_hba.conf, exit 5, fast, with the TLS hint.
    let began = std::time::Instant::now();
    let (output, stdout, stderr) = w
        .credswap(&["--secret-id", &secret, "--sslmode", "disable"])
        .await;
    assert_eq!(output.status.code(), Some(5), "{stdout}\n{stderr}");
    assert!(began.elapsed() < std::time::Duration::from_secs(20));
    assert!(stderr.contains("pg_hba.conf"), "{stderr}");
    assert!(
        stderr.contains("hint:") && stderr.contains("--sslmode"),
        "{stderr}"
    );
    assert!(!stderr.contains(&password), "{stderr}");
    assert!(logs_in_over_tls(password.clone()).await);

    // verify-full without a CA file: a usage error.
    let (output, _, stderr) = w
        .credswap(&["--secret-id", &secret, "--sslmode", "verify-full"])
        .await;
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CA file"), "{stderr}");

    // verify-full with the cluster's CA: rotated (taking the rejected attempt's pending
    // version over: it never reached the database).
    let (output, stdout, stderr) = w
        .credswap(&[
            "--secret-id",
            &secret,
            "--sslmode",
            "verify-full",
            "--ca-file",
            &ca_file,
            "--takeover",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let new_password = w.current(&secret).await["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_password, password);
    assert!(logs_in_over_tls(new_password.clone()).await);
    assert!(!logs_in_over_tls(password.clone()).await);
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains(&new_password) && !text.contains(&password),
            "{text}"
        );
    }
}
