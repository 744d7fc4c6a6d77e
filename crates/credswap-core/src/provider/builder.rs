//! [`RotatingCredentialsBuilder`]: how a provider is built and its first credential fetched.

use super::*;

/// Builds a [`RotatingCredentials`]; from [`RotatingCredentials::builder`].
pub struct RotatingCredentialsBuilder {
    pub(super) source: Arc<dyn CredentialSource>,
    pub(super) policy: Policy,
    pub(super) validator: Option<Arc<dyn Validate>>,
    pub(super) background_refresh: bool,
}

impl fmt::Debug for RotatingCredentialsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingCredentialsBuilder")
            .field("policy", &self.policy)
            .field("validator", &self.validator.is_some())
            .field("background_refresh", &self.background_refresh)
            .finish_non_exhaustive()
    }
}

impl RotatingCredentialsBuilder {
    /// Sets the timing rules (default: [`Policy::default`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Requires every new credential to pass `validator` before it is published. The first
    /// credential must pass it too, or [`build`](Self::build) fails.
    pub fn validator(mut self, validator: impl Validate) -> Self {
        self.validator = Some(Arc::new(validator));
        self
    }

    /// Turns the background refresher off (default: on). Without it, the credential changes
    /// only through [`RotatingCredentials::refresh`] and auth-failure reports.
    pub fn background_refresh(mut self, enabled: bool) -> Self {
        self.background_refresh = enabled;
        self
    }

    /// Fetches the first credential and starts the refresher.
    ///
    /// Fails, with the source's error, when the first fetch fails, times out or (with a
    /// validator) is rejected: there is no pool without a credential.
    pub async fn build(self) -> Result<RotatingCredentials, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::no_runtime())?;
        if let Some(lead) = self.source.replaces_before_expiry()
            && self.policy.expiry_margin() > lead
        {
            return Err(Error::policy(PolicyError::new(
                "expiry_margin",
                format!(
                    "expiry_margin ({}) is longer than the source's lead ({}): the provider \
                     would retire each credential before the source replaces it and reconnect \
                     the pools with a login about to end; lower expiry_margin to {} or less, or \
                     raise the source's margin (a Vault dynamic role's lease_margin)",
                    fmt_duration(self.policy.expiry_margin()),
                    fmt_duration(lead),
                    fmt_duration(lead),
                ),
            )));
        }
        let counters = Counters::default();
        counters.fetches.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let credential = fetch_with_timeout(&*self.source, &self.policy).await?;
        if credential.is_minted()
            && let Some(left) = credential.expires_at().map(|at| {
                at.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
            })
            && left <= self.policy.expiry_margin()
        {
            // Every connect would find the token due and mint another.
            return Err(Error::policy(PolicyError::new(
                "expiry_margin",
                format!(
                    "the source's tokens live {}, not longer than expiry_margin ({}): every \
                     connect would mint a new one; lower expiry_margin well below the token's \
                     life (a tenth of it is plenty), or mint longer-lived tokens",
                    fmt_duration(left),
                    fmt_duration(self.policy.expiry_margin()),
                ),
            )));
        }
        if let Some(validator) = &self.validator {
            validate_bounded(&**validator, &credential, &self.policy).await?;
        }
        let proven = Arc::new(crate::snapshot::Proven::default());
        let snapshot = Arc::new(Snapshot::new(
            credential,
            Generation::FIRST,
            Instant::now(),
            &self.policy,
            &proven,
        ));
        let last_proven = ArcSwapOption::empty();
        if self.validator.is_some() {
            snapshot.mark_proven(Generation::FIRST);
            last_proven.store(Some(Arc::clone(&snapshot)));
        }
        tracing::debug!(
            username = %snapshot.credential().username(),
            version = ?snapshot.credential().version(),
            "first credential fetched"
        );
        let (generation_tx, _) = watch::channel(Generation::FIRST);
        let shared = Arc::new(Shared {
            source: self.source,
            policy: self.policy,
            validator: self.validator,
            current: ArcSwap::new(snapshot),
            proven,
            last_proven,
            pending: ArcSwapOption::empty(),
            superseded: ArcSwapOption::empty(),
            issued: AtomicU64::new(Generation::FIRST.get()),
            generation_tx,
            flight: tokio::sync::Mutex::new(None),
            completed: AtomicU64::new(0),
            schedule_changed: Arc::new(Notify::new()),
            counters,
            status: Mutex::new(Status {
                consecutive_failures: 0,
                last_auth_fetch: None,
                next_auth_fetch: None,
                auth_burst: 0,
                auth_burst_of: None,
                refused: None,
                warned_refused: None,
                last_error: None,
                warned_overdue: None,
                warned_expiring: None,
                warned_stuck: None,
            }),
            refresher: Mutex::new(None),
        });
        if self.background_refresh {
            let task = runtime.spawn(refresher::run(
                Arc::downgrade(&shared),
                Arc::clone(&shared.schedule_changed),
                began,
            ));
            *lock(&shared.refresher) = Some(task.abort_handle());
        }
        Ok(RotatingCredentials { shared })
    }
}

/// Runs the validator within the policy's `validation_timeout`.
pub(super) async fn validate_bounded(
    validator: &dyn Validate,
    credential: &Credential,
    policy: &Policy,
) -> Result<(), Error> {
    let limit = policy.validation_timeout();
    let span = tracing::debug_span!("credswap.validate", username = %credential.username());
    match tokio::time::timeout(limit, validator.validate(credential).instrument(span)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::validation(credential.username(), &e)),
        Err(_) => Err(Error::validation(
            credential.username(),
            &format!(
                "validation did not finish within {} (is the database stalled?)",
                crate::policy::fmt_duration(limit)
            )
            .into(),
        )),
    }
}
