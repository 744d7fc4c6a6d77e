//! [`TokenGate`]: minted credentials (RDS IAM, Aurora DSQL tokens) against a real PostgreSQL.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use credswap_core::{Credential, CredentialSource, SourceError};
use tokio_postgres::Client;

use crate::roles::{password_clause, quote_ident};
use crate::{Error, TestPostgres, random_password};

/// A stand-in for a token-minting store: every [`fetch`](CredentialSource::fetch) mints a new
/// random token for one role and, before returning it, installs it as the role's password, so
/// that **only the newest token logs in** (stricter than RDS, which takes any unexpired
/// token). The password is valid until the token's margin has half passed (`VALID UNTIL
/// expires_at - margin / 2`): a login with a token inside its margin that reaches the server
/// after that is refused as an expired password, which
/// [`TestPostgres::expired_logins`] counts.
///
/// The credential is [minted](Credential::minted), with `expires_at` = now + `life`. Give the
/// provider a policy whose `expiry_margin` is the gate's `margin`.
///
/// `Debug` never prints a token.
#[derive(Clone)]
pub struct TokenGate {
    inner: Arc<Inner>,
}

struct Inner {
    admin: Client,
    role: String,
    life: Duration,
    margin: Duration,
    minted: AtomicU64,
    /// Serializes mints, so the password installed last is the token returned last.
    install: tokio::sync::Mutex<()>,
    last: Mutex<Option<SystemTime>>,
}

impl TokenGate {
    /// A gate minting tokens for `role` (created if missing) that live `life` and are renewed
    /// `margin` before they end.
    ///
    /// # Errors
    ///
    /// [`Error::is_query`] when the admin connection or the role cannot be set up.
    pub async fn new(
        pg: &TestPostgres,
        role: &str,
        life: Duration,
        margin: Duration,
    ) -> Result<Self, Error> {
        assert!(
            margin < life,
            "a token's margin must be shorter than its life"
        );
        let admin = pg.admin().await?;
        let exists = admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .map_err(|e| Error::query("looking up the token role", e))?
            .is_some();
        if !exists {
            pg.create_login_role(role, &random_password()).await?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                admin,
                role: role.to_owned(),
                life,
                margin,
                minted: AtomicU64::new(0),
                install: tokio::sync::Mutex::new(()),
                last: Mutex::new(None),
            }),
        })
    }

    /// Tokens minted so far.
    pub fn minted(&self) -> u64 {
        self.inner.minted.load(Ordering::Relaxed)
    }

    /// When the last token was minted.
    pub fn last_minted(&self) -> Option<SystemTime> {
        *self.inner.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The role the tokens log in as.
    pub fn role(&self) -> &str {
        &self.inner.role
    }
}

impl fmt::Debug for TokenGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGate")
            .field("role", &self.inner.role)
            .field("life", &self.inner.life)
            .field("margin", &self.inner.margin)
            .field("minted", &self.minted())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl CredentialSource for TokenGate {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        let inner = &self.inner;
        let _one_at_a_time = inner.install.lock().await;
        let token = random_password();
        let now = SystemTime::now();
        let expires_at = now + inner.life;
        let valid_until = expires_at - inner.margin / 2;
        let sql = format!(
            "ALTER ROLE {} {} VALID UNTIL '{}'",
            quote_ident(&inner.role),
            password_clause(&token),
            crate::clock::timestamp_literal(valid_until)
        );
        inner.admin.batch_execute(&sql).await.map_err(|e| {
            SourceError::unavailable(format!(
                "installing the token failed: {}",
                crate::harness::error_chain(&e)
            ))
        })?;
        inner.minted.fetch_add(1, Ordering::Relaxed);
        *inner.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        Ok(Credential::minted(inner.role.clone(), token)
            .with_issued_at(now)
            .with_expires_at(expires_at))
    }
}
