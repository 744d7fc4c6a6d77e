//! The store's pending credential: read after a refused login or for a pending trial, offered
//! back after a refusal of an adopted one, and published once the database accepts it.

use super::*;

impl Shared {
    /// Asks the source for its pending credential after a refused login with `refused` (the
    /// current generation), under the single flight; keeps it as the next generation.
    pub(super) async fn fetch_pending(&self, refused: Generation) {
        let _flight = self.flight.lock().await;
        self.load_pending(refused, PendingWhy::Refused).await;
        self.offer_superseded(refused);
    }

    /// The database refuses the store's pending credential that the pools adopted (`refused`,
    /// current), and the store has no other pending one: the rotation may have been reverted
    /// with its pending version left behind (the database has the store's current value
    /// again). The credential the adopted one replaced becomes the pending credential, under a
    /// new generation number: connects try it after a refusal (and a trial whose current login
    /// is refused), and once the database accepts it, it is published like any pending
    /// credential, so the store's value wins back, proven, even though it equals the credential
    /// it replaced. A late refusal from before the adoption publishes nothing: the database
    /// refuses the candidate. Call it holding the single flight.
    pub(super) fn offer_superseded(&self, refused: Generation) {
        let Some(superseded) = self.superseded.load_full() else {
            return;
        };
        let current = self.current.load_full();
        if current.generation() != refused
            || self
                .pending
                .load()
                .as_ref()
                .is_some_and(|p| p.generation() > current.generation())
        {
            return;
        }
        // Its age counts from now: the credential's own `issued_at` is the replaced version's,
        // and would make the candidate look like a stuck rotation at once.
        let candidate = Snapshot::new(
            (*superseded).clone().without_issued_at(),
            self.allocate(),
            Instant::now(),
            &self.policy,
            &self.proven,
        );
        tracing::info!(
            generation = refused.get(),
            username = %candidate.credential().username(),
            "the database refuses the adopted pending credential; trying the one it replaced (a reverted rotation?)"
        );
        self.pending.store(Some(Arc::new(candidate)));
        self.generation_tx.send_replace(refused);
    }

    /// Asks the source for its pending credential while the current generation is `current`,
    /// and keeps it as the next generation (a newer login than the current one only). Call it
    /// holding the single flight.
    pub(super) async fn load_pending(&self, current: Generation, why: PendingWhy) {
        let snapshot = self.current.load_full();
        if snapshot.generation() != current {
            return;
        }
        self.counters
            .pending_fetches
            .fetch_add(1, Ordering::Relaxed);
        let fetched =
            tokio::time::timeout(self.policy.fetch_timeout(), self.source.fetch_pending()).await;
        let credential = match fetched {
            Ok(Ok(Some(credential))) if !credential.is_same_login(snapshot.credential()) => {
                credential
            }
            Ok(Ok(_)) => {
                // Nothing pending in the store; keep the credential an adopted pending one
                // replaced while it is offered after a refusal (see `offer_superseded`).
                let offered = self.superseded.load_full().is_some_and(|superseded| {
                    self.pending
                        .load()
                        .as_ref()
                        .is_some_and(|p| p.credential().is_same_login(&superseded))
                });
                if !offered {
                    self.pending.store(None);
                }
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "fetching the pending credential failed");
                return;
            }
            Err(_) => {
                tracing::debug!("fetching the pending credential timed out");
                return;
            }
        };
        if self
            .pending
            .load()
            .as_ref()
            .is_some_and(|p| p.generation() > current && p.credential().is_same_login(&credential))
        {
            return;
        }
        self.counters
            .pending_fetched
            .fetch_add(1, Ordering::Relaxed);
        match why {
            PendingWhy::Refused => tracing::info!(
                generation = current.get(),
                username = %credential.username(),
                version = ?credential.version(),
                "the current credential is refused and the store has a pending one; connects try it"
            ),
            PendingWhy::Rotating => tracing::info!(
                generation = current.get(),
                username = %credential.username(),
                version = ?credential.version(),
                "the store is rotating; the pools try its pending credential until the database accepts it"
            ),
        }
        // A new login gets a new number, also when it replaces another pending one (a rotation
        // retried with a new token): a probe of the old one still in flight cannot publish it.
        let pending = Snapshot::new(
            credential,
            self.allocate(),
            Instant::now(),
            &self.policy,
            &self.proven,
        );
        self.pending.store(Some(Arc::new(pending)));
        // Wake the adapters' watchers: a pending trial is due.
        self.generation_tx.send_replace(current);
    }

    /// Publishes the pending snapshot of `generation` if it still follows the current one.
    /// Call it holding the single flight.
    pub(super) fn adopt_pending(&self, generation: Generation) {
        let current = self.current.load_full();
        if current.generation() == generation && !current.is_proven() {
            // The store finished meanwhile and the fetch published this very login (it keeps
            // the pending number): the acceptance proves it.
            current.mark_proven(generation);
            self.last_proven.store(Some(Arc::clone(&current)));
            self.generation_tx.send_replace(generation);
            return;
        }
        let Some(pending) = self.pending.load_full() else {
            return;
        };
        if pending.generation() != generation || current.generation() >= generation {
            return;
        }
        let _publish = tracing::debug_span!(
            "credswap.publish",
            generation = generation.get(),
            pending = true
        )
        .entered();
        self.pending.store(None);
        self.superseded
            .store(Some(Arc::new(current.credential().clone())));
        // The very snapshot the accepted connections were tagged with.
        let snapshot = pending;
        snapshot.mark_proven(generation);
        self.last_proven.store(Some(Arc::clone(&snapshot)));
        self.current.store(Arc::clone(&snapshot));
        {
            let mut status = lock(&self.status);
            if status.refused.is_some_and(|r| r.generation < generation) {
                status.refused = None;
            }
        }
        self.generation_tx.send_replace(generation);
        self.counters.rotations.fetch_add(1, Ordering::Relaxed);
        self.counters
            .pending_published
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            generation = generation.get(),
            username = %snapshot.credential().username(),
            version = ?snapshot.credential().version(),
            "the database accepted the store's pending credential; published before the store"
        );
    }
}
