//! The feedback an adapter gives the provider: refused and accepted logins, and what a
//! connect tries after a refusal (the store's pending credential, the last proven one).
//! Reached by adapters through [`contract::Feedback`](crate::contract::Feedback).

use super::*;

impl RotatingCredentials {
    /// Tells the provider that a connect with `generation` was refused as an authentication
    /// failure (SQLSTATE `28P01` or `28000`), and returns the snapshot to retry with.
    ///
    /// If the generation has already moved on, nothing is fetched (another report, or the
    /// refresher, got there first): the current snapshot is returned. The fetches of one burst
    /// of refusals are coalesced: the first comes at once, the next `auth_refresh_interval`
    /// later, the gap doubling up to [`AUTH_REFRESH_MAX`]; after a fetch the store answered
    /// `unavailable` (or that timed out) the next waits the policy's backoff with full jitter.
    /// A report inside a gap fetches nothing and returns the current snapshot (possibly the
    /// refused one): callers wait for [`subscribe`](Self::subscribe) or retry later. Otherwise
    /// this is a [`refresh`](Self::refresh), shared with any concurrent callers, followed by a
    /// read of the store's pending credential when the store still says the refused one.
    ///
    /// The refusal also counts toward [`health`](Self::health) (see
    /// [`report_refused`](Self::report_refused)).
    pub(crate) async fn report_auth_failure(
        &self,
        generation: Generation,
    ) -> Result<Arc<Snapshot>, Error> {
        self.report_refused(generation);
        let current = self.current();
        if current.generation() != generation {
            self.shared
                .counters
                .auth_dedup
                .fetch_add(1, Ordering::Relaxed);
            return Ok(current);
        }
        {
            let mut status = lock(&self.shared.status);
            let now = Instant::now();
            if status.auth_burst_of != Some(generation) {
                // A new generation's refusals start a burst of their own.
                status.auth_burst_of = Some(generation);
                status.auth_burst = 0;
                status.next_auth_fetch = None;
            }
            if status.next_auth_fetch.is_some_and(|at| now < at) {
                drop(status);
                self.shared
                    .counters
                    .auth_dedup
                    .fetch_add(1, Ordering::Relaxed);
                self.shared
                    .counters
                    .auth_coalesced
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(current);
            }
            status.last_auth_fetch = Some(now);
            status.auth_burst = status.auth_burst.saturating_add(1);
            status.next_auth_fetch = Some(now + auth_gap(&self.shared.policy, status.auth_burst));
        }
        self.shared
            .counters
            .auth_refreshes
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            generation = generation.get(),
            username = %current.credential().username(),
            "authentication failed with the current credential; refreshing"
        );
        // A source answering from a cache (a Vault lease) checks the store this time.
        self.shared.source.login_refused(current.credential());
        let fresh = self.refresh().await;
        match &fresh {
            Ok(fresh) if fresh.generation() == generation => {
                // The store still says the refused credential: it may be mid-rotation, with
                // the database already on its pending one.
                self.shared.fetch_pending(generation).await;
            }
            Ok(_) => {}
            Err(e) if e.is_timeout() || e.source_error().is_some_and(|e| e.is_unavailable()) => {
                // A throttling or unreachable store: give it time, with full jitter, so that
                // neither this pool nor a fleet of them hammers it in step.
                let failures = lock(&self.shared.status).consecutive_failures;
                let backoff = full_jitter(self.shared.policy.backoff(failures));
                let mut status = lock(&self.shared.status);
                let at = Instant::now() + backoff;
                if status.next_auth_fetch.is_none_or(|next| next < at) {
                    status.next_auth_fetch = Some(at);
                }
            }
            Err(_) => {}
        }
        fresh
    }

    /// The store's pending credential, as the generation that would follow the current one,
    /// if a refused login made the provider ask for it and the store had one (see
    /// [`CredentialSource::fetch_pending`]). An adapter whose connect with the current
    /// credential is refused tries this one; when a connection with it opens,
    /// [`report_accepted`](Self::report_accepted) publishes it without waiting for the store.
    pub(crate) fn pending(&self) -> Option<Arc<Snapshot>> {
        let pending = self.shared.pending.load_full()?;
        (pending.generation() > self.generation()).then_some(pending)
    }

    /// The store's pending credential while the pools still try it on their own (pending
    /// trials): until it has been pending for the policy's `pending_trial_window`. A pending
    /// version older than that is a stuck rotation (it died after createSecret, or its
    /// setSecret failed): trying it again would only send the database a login it refuses,
    /// so it is left alone until it changes, and [`health`](Self::health) reports it. A
    /// refused login with the current credential still tries it.
    pub(crate) fn pending_on_trial(&self) -> Option<Arc<Snapshot>> {
        let pending = self.pending()?;
        (pending_age(&pending) < self.shared.policy.pending_trial_window()).then_some(pending)
    }

    /// Records that the database refused a login with `generation` (an adapter calls this; it
    /// is part of [`report_auth_failure`](Self::report_auth_failure)). While the current
    /// generation is refused, [`health`](Self::health) says so, and the first refusal of each
    /// generation is logged once.
    pub(crate) fn report_refused(&self, generation: Generation) {
        if generation != self.generation() {
            return;
        }
        self.shared
            .counters
            .refusals
            .fetch_add(1, Ordering::Relaxed);
        let mut status = lock(&self.shared.status);
        let now = Instant::now();
        match &mut status.refused {
            Some(refusal) if refusal.generation == generation => {
                if now.saturating_duration_since(refusal.last) > REFUSAL_BURST_QUIET {
                    refusal.since = now;
                }
                refusal.last = now;
                refusal.count += 1;
            }
            slot => {
                *slot = Some(Refusal {
                    generation,
                    since: now,
                    last: now,
                    count: 1,
                });
                // Wake the adapters: one that tries a new login first may go back to the last
                // accepted one.
                self.shared.generation_tx.send_replace(generation);
            }
        }
        if status.warned_refused != Some(generation) {
            status.warned_refused = Some(generation);
            drop(status);
            tracing::warn!(
                generation = generation.get(),
                username = %self.load().credential().username(),
                "the database refuses the current credential; connects wait for a working one"
            );
        }
    }

    /// Records that the database accepted a login with `generation`: clears a refusal of that
    /// generation from [`health`](Self::health).
    pub(crate) fn report_accepted(&self, generation: Generation) {
        if generation > self.generation()
            && self
                .shared
                .pending
                .load()
                .as_ref()
                .is_some_and(|p| p.generation() == generation)
        {
            self.publish_pending(generation);
            return;
        }
        let current = self.load();
        if current.is_same_login(generation) && !current.is_proven() {
            current.mark_proven(current.generation());
            let generation = current.generation();
            self.shared.last_proven.store(Some(current.into_arc()));
            // Wake the drains: connections of older logins are stale from now on.
            self.shared.generation_tx.send_replace(generation);
            tracing::debug!(
                generation = generation.get(),
                "the database accepted the new credential"
            );
        }
        let mut status = lock(&self.shared.status);
        if self.load().is_same_login(generation) {
            // The burst of refusals is over: the next one fetches at once.
            status.auth_burst = 0;
            status.next_auth_fetch = None;
        }
        if status.refused.is_some_and(|r| r.generation == generation) {
            status.refused = None;
            drop(status);
            tracing::info!(
                generation = generation.get(),
                "the database accepts the current credential again"
            );
        }
    }

    /// Publishes the pending credential of `generation`, which the database accepted, as the
    /// current one: under the single flight, so generations never go backwards (at once when no
    /// fetch is running, otherwise in a task once it ends).
    fn publish_pending(&self, generation: Generation) {
        let shared = Arc::clone(&self.shared);
        if let Ok(flight) = self.shared.flight.try_lock() {
            shared.adopt_pending(generation);
            drop(flight);
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _flight = shared.flight.lock().await;
            shared.adopt_pending(generation);
        });
    }

    /// Since when the database has refused logins with `generation` (the current one), if it
    /// does and has accepted none since.
    pub(crate) fn refused_since(&self, generation: Generation) -> Option<Instant> {
        lock(&self.shared.status)
            .refused
            .filter(|r| r.generation == generation)
            .map(|r| r.since)
    }

    /// When the next store fetch caused by a refused login may start (now, or later in a
    /// burst of refusals), while the store answers; `None` while its fetches fail: there is no
    /// answer to wait for.
    pub(crate) fn next_refusal_fetch(&self) -> Option<Instant> {
        let status = lock(&self.shared.status);
        if status.consecutive_failures > 0 {
            return None;
        }
        let now = Instant::now();
        Some(status.next_auth_fetch.map_or(now, |at| at.max(now)))
    }

    /// Whether the database has refused a login with `generation` (the current one) and
    /// accepted none since.
    pub(crate) fn is_refused(&self, generation: Generation) -> bool {
        lock(&self.shared.status)
            .refused
            .is_some_and(|r| r.generation == generation)
    }

    /// The newest snapshot whose credential the database accepted, if it is known: the
    /// fallback a connect tries when the current credential is refused before it was ever
    /// accepted (a mistyped secret), so that the pool keeps working on the credential that did.
    pub(crate) fn proven(&self) -> Option<Arc<Snapshot>> {
        self.shared.last_proven.load_full()
    }
}
