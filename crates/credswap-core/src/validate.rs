//! Validate-before-swap: a check a new credential must pass before it is published.

use std::fmt;
use std::future::Future;

use async_trait::async_trait;

use crate::{BoxError, Credential};

/// A check run on every *new* credential (a changed username or password) before the provider
/// publishes it. A credential that fails is not published: the pools keep the current one, the
/// failure is logged without the secret, and the fetch is retried on the backoff schedule.
///
/// This catches a store that publishes a password before the database has it (a broken
/// rotation lambda, a typo). Adapters offer a validator that opens one real connection.
#[async_trait]
pub trait Validate: Send + Sync + 'static {
    /// `Ok(())` when `credential` works.
    async fn validate(&self, credential: &Credential) -> Result<(), BoxError>;
}

/// A validator from an async closure; see [`from_fn`].
pub struct FnValidator<F> {
    f: F,
}

impl<F> fmt::Debug for FnValidator<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnValidator").finish_non_exhaustive()
    }
}

/// A validator that calls `f` with a clone of the candidate credential.
///
/// ```
/// use credswap_core::validate;
/// use credswap_core::{BoxError, Credential};
///
/// let no_admins = validate::from_fn(|credential: Credential| async move {
///     if credential.username() == "postgres" {
///         return Err::<(), BoxError>("refusing to run the application as a superuser".into());
///     }
///     Ok(())
/// });
/// # let _ = no_admins;
/// ```
pub fn from_fn<F, Fut>(f: F) -> FnValidator<F>
where
    F: Fn(Credential) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    FnValidator { f }
}

#[async_trait]
impl<F, Fut> Validate for FnValidator<F>
where
    F: Fn(Credential) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    async fn validate(&self, credential: &Credential) -> Result<(), BoxError> {
        (self.f)(credential.clone()).await
    }
}

#[async_trait]
impl Validate for Box<dyn Validate> {
    async fn validate(&self, credential: &Credential) -> Result<(), BoxError> {
        (**self).validate(credential).await
    }
}
