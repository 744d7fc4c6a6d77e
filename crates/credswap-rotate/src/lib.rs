//! The AWS Secrets Manager rotation protocol for PostgreSQL, as a library.
//!
//! Secrets Manager rotates a secret by calling a rotation function four times with the same
//! `(SecretId, ClientRequestToken, Step)`; [`Rotator`] implements each [`Step`]:
//!
//! 1. **createSecret** ([`Rotator::create_secret`]): generates a new password
//!    ([`PasswordPolicy`], locally) and stores the current value with it, and the user this
//!    rotation changes, as a new version whose id is the token, with the stage `AWSPENDING`.
//!    Every other field of the current value (`host`, `port`, `dbname`, `engine`, `masterarn`,
//!    anything else) is kept. Skipped when the token's version already has a value.
//! 2. **setSecret** ([`Rotator::set_secret`]): changes the database so the `AWSPENDING`
//!    credential logs in. Skipped when it already does.
//! 3. **testSecret** ([`Rotator::test_secret`]): logs in with the `AWSPENDING` credential and
//!    runs a query.
//! 4. **finishSecret** ([`Rotator::finish_secret`]): moves `AWSCURRENT` to the token's version
//!    (Secrets Manager moves `AWSPREVIOUS` to the version that was current) and removes
//!    `AWSPENDING` from it explicitly.
//!
//! Every step is idempotent per token: run again with the same token it changes nothing more
//! and reports [`Outcome::AlreadyDone`]; the steps after createSecret report that too once the
//! token's version is `AWSCURRENT`. [`Rotator::rotate`] makes a token ([`new_token`]) and runs
//! the four in a row, with an optional pause before finishSecret
//! ([`Rotator::pause_before_finish`]).
//!
//! # Whose rotation it is
//!
//! - **Another token's `AWSPENDING` is not taken over** unless [`Rotator::takeover`] says so:
//!   createSecret with a new token while a version created by another `ClientRequestToken` is
//!   `AWSPENDING` (a rotation in progress, or one whose function died) fails with
//!   [`Error::is_takeover_refused`], naming the secret and that version
//!   ([`Error::version_id`]), and changes nothing. A rotation that died between setSecret and
//!   finishSecret left the database with the password only its version holds; moving
//!   `AWSPENDING` away from it would orphan that password. Finish it with its own token
//!   instead ([`Rotator::rotate_with_token`]: setSecret and testSecret are skipped when its
//!   credential already logs in).
//! - **A finished token is not run again**: a token whose version is `AWSPREVIOUS` (or older
//!   than `AWSCURRENT`, without a stage) is refused by every step, and
//!   [`Rotator::rotate_with_token`] refuses one whose version is `AWSCURRENT` as well
//!   ([`Error::is_token_finished`]): going on would put a retired password back. (A single
//!   step re-run with the token of the `AWSCURRENT` version still reports
//!   [`Outcome::AlreadyDone`], as the protocol's retries need.)
//!
//! # TLS and the server's configuration
//!
//! The rotator opens its connections as its [`Database`] says ([`Rotator::database`]; no TLS
//! by default). `Database::rustls` (feature `rustls`, on by default) takes libpq's `sslmode`
//! ([`SslMode`]: `disable`, `prefer`, `require`, `verify-ca`, `verify-full`) and a CA file:
//! `verify-full` checks the certificate's chain and that it names the secret's `host`. Any
//! other tokio-postgres TLS connector fits [`Database::tls`]. A login the server turns away
//! by its `pg_hba.conf` (SQLSTATE `28000` "no pg_hba.conf entry ...", which is also what RDS's
//! `rds.force_ssl` answers a plaintext login) fails the step at once with
//! [`Error::is_connection_rejected`]: a configuration problem, not a wrong password, so no
//! other credential is tried. A wrong password (`28P01`) stays [`Error::is_auth_failure`].
//!
//! # Strategies
//!
//! - [`Strategy::SingleUser`]: one user; setSecret logs in as it with its current password and
//!   runs `ALTER ROLE CURRENT_USER PASSWORD ...` (AWS's single-user template). Between
//!   setSecret and finishSecret only the new password logs in while the store still hands out
//!   the old one: clients must fetch again on a refused login (what credswap's pools do).
//! - [`Strategy::AlternatingUsers`]: two users, `<user>` and `<user>_clone`
//!   ([`alternate_username`], AWS's naming), take turns. Each rotation changes the password of
//!   the user not in `AWSCURRENT`, logged in as a [`Master`] credential (the secret's
//!   `masterarn`, another secret, or a given login), so the current login keeps working
//!   throughout. The first rotation creates the clone: `CREATE ROLE <user>_clone LOGIN`,
//!   `GRANT <user> TO <user>_clone` (as AWS's multi-user template does, so the clone has every
//!   privilege of the original, owned objects included), the original's direct role
//!   memberships, and its per-role settings (`ALTER ROLE .. SET`, such as `search_path`).
//!   Before changing the inactive user's password, setSecret looks for sessions still logged
//!   in as it and applies the [`SessionPolicy`] (`Fail`, `Wait`, `Terminate`); the
//!   [`StepReport`] says what it found ([`SessionsFound`]).
//!
//! # Secrets stay secret
//!
//! Passwords reach PostgreSQL only as SCRAM-SHA-256 verifiers computed here
//! (`ALTER ROLE .. PASSWORD 'SCRAM-SHA-256$4096:...'`), so they never appear in SQL text or the
//! server log. Nothing is logged (with `tracing`) but secret ids, tokens, user names and
//! counts. [`Error`]'s `Display` and `Debug`, and the `Debug` of every type here, never
//! contain a password or a secret's value.
//!
//! # IAM
//!
//! The rotation needs, on the rotated secret: `secretsmanager:DescribeSecret`,
//! `secretsmanager:GetSecretValue`, `secretsmanager:PutSecretValue` and
//! `secretsmanager:UpdateSecretVersionStage` (and `kms:Decrypt`/`kms:GenerateDataKey` on a
//! customer-managed key); for alternating users with a master secret,
//! `secretsmanager:GetSecretValue` on the master secret as well. The Lambda (or whatever runs
//! it) needs network access to the database.
//!
//! # In a Lambda rotation function
//!
//! The steps are plain `async fn`s: they spawn nothing and keep no global state.
//!
//! ```ignore
//! use credswap_rotate::{Master, Rotator, SessionPolicy, Step, Strategy};
//! use lambda_runtime::{LambdaEvent, service_fn};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Event {
//!     #[serde(rename = "SecretId")]
//!     secret_id: String,
//!     #[serde(rename = "ClientRequestToken")]
//!     token: String,
//!     #[serde(rename = "Step")]
//!     step: String,
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), lambda_runtime::Error> {
//!     let config = aws_config::load_from_env().await;
//!     let client = aws_sdk_secretsmanager::Client::new(&config);
//!     lambda_runtime::run(service_fn(|event: LambdaEvent<Event>| {
//!         let client = client.clone();
//!         async move {
//!             let Event { secret_id, token, step } = event.payload;
//!             let step: Step = step.parse()?;
//!             let rotator = Rotator::new(
//!                 client,
//!                 secret_id,
//!                 Strategy::AlternatingUsers(Master::FromSecret),
//!             )
//!             .session_policy(SessionPolicy::Terminate);
//!             let report = rotator.run_step(step, &token).await?;
//!             tracing::info!(?report, "rotation step done");
//!             Ok::<(), lambda_runtime::Error>(())
//!         }
//!     }))
//!     .await
//! }
//! ```
//!
//! # A whole rotation
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use credswap_rotate::{Rotator, Strategy};
//!
//! # async fn demo(client: aws_sdk_secretsmanager::Client) -> Result<(), credswap_rotate::Error> {
//! let report = Rotator::new(client, "prod/app/db", Strategy::SingleUser)
//!     .pause_before_finish(Duration::from_secs(1))
//!     .rotate()
//!     .await?;
//! println!("{} is now AWSCURRENT (user {})", report.token, report.username);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod db;
mod error;
mod password;
mod rotator;
mod secret;
mod sessions;
mod step;
mod store;
mod strategy;
mod tls;

pub use db::Database;
pub use error::Error;
pub use password::{DEFAULT_EXCLUDED, DEFAULT_LENGTH, PasswordPolicy};
pub use rotator::{DEFAULT_CONNECT_TIMEOUT, RotationReport, Rotator, new_token};
pub use secret::SecretValue;
pub use sessions::{SessionPolicy, SessionsFound};
pub use step::{Outcome, Step, StepReport, UnknownStep};
pub use strategy::{CLONE_SUFFIX, Master, Strategy, alternate_username};
pub use tls::{SslMode, UnknownSslMode};
