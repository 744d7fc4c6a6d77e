//! How a pooled connection carries its [`ConnectionTag`].
//!
//! deadpool gives its hooks a `&mut ClientWrapper` and nothing to attach data to, so the tags
//! live in a map owned by the pool's hooks and watcher, keyed by the connection's statement
//! cache: the one `Arc` a `ClientWrapper` owns for its whole life. Each entry holds a `Weak` to
//! that `Arc`, so the address cannot be reused while the entry exists and the key is exact.
//!
//! The tag reaches the map through [`HANDOFF`]: the pool's `Connect` stores it on the thread
//! that completes the connect, and the first `post_create` hook takes it.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use credswap_core::contract::{Adapter, ConnectionTag, Counters, Event};
use credswap_core::{Generation, Snapshot};
use deadpool_postgres::{ClientWrapper, StatementCache};

thread_local! {
    /// The tag of the connection a `Connect` just opened, for the `post_create` hook of the
    /// same `Pool::get`.
    ///
    /// deadpool-postgres 0.14 / deadpool 0.13 complete `Manager::create` (which awaits the
    /// connect) and run the `post_create` hooks in the same poll, with no suspension point in
    /// between, and the adapter's hook runs first: no other connect on this thread can come
    /// between. `tests` in this module fail if a deadpool release changes that; the workspace
    /// pins the versions it is proven on. A hook that finds the slot empty tags the connection
    /// as [`UNKNOWN`], which is stale.
    static HANDOFF: Cell<Option<ConnectionTag>> = const { Cell::new(None) };
}

/// Called by the `Connect` as its last step before completing.
pub(crate) fn hand_off(tag: ConnectionTag) {
    HANDOFF.with(|slot| slot.set(Some(tag)));
}

/// The generation of a connection whose tag was lost: never current, so the connection serves
/// the checkout that created it and is closed when returned.
pub(crate) const UNKNOWN: Generation = Generation::new(0);

/// The tags of one pool's connections.
#[derive(Default)]
pub(crate) struct Tags {
    map: Mutex<HashMap<usize, (Weak<StatementCache>, ConnectionTag)>>,
}

fn key(client: &ClientWrapper) -> usize {
    Arc::as_ptr(&client.statement_cache) as usize
}

impl Tags {
    fn map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<usize, (Weak<StatementCache>, ConnectionTag)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `post_create` hook: takes the handed-off tag and attaches it to `client`.
    pub(crate) fn attach(&self, client: &ClientWrapper, counters: &Counters) {
        let tag = HANDOFF.with(Cell::take).unwrap_or_else(|| {
            counters.bump(Event::Untagged);
            tracing::warn!(
                "a new connection could not be tagged with its generation; it will be closed when returned"
            );
            ConnectionTag::at(UNKNOWN, tokio::time::Instant::now())
        });
        self.map()
            .insert(key(client), (Arc::downgrade(&client.statement_cache), tag));
    }

    /// The tag of `client`, if it has one.
    pub(crate) fn get(&self, client: &ClientWrapper) -> Option<ConnectionTag> {
        match self.map().get(&key(client)) {
            Some((weak, tag)) if weak.as_ptr() == Arc::as_ptr(&client.statement_cache) => {
                Some(*tag)
            }
            _ => None,
        }
    }

    /// The drain's verdict on `client` ([`Adapter::should_close`]); a connection without a tag
    /// is closed.
    pub(crate) fn should_close(
        &self,
        client: &ClientWrapper,
        adapter: &Adapter,
        current: &Snapshot,
        idle: bool,
    ) -> bool {
        self.get(client)
            .is_none_or(|tag| adapter.should_close(&tag, current, idle))
    }

    /// Forgets the tags of connections that no longer exist.
    pub(crate) fn prune(&self) {
        self.map().retain(|_, (weak, _)| weak.strong_count() > 0);
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tags")
            .field("entries", &self.map().len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
