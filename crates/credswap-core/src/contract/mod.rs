//! The adapter contract as code: what every pool adapter does the same way.
//!
//! An adapter (`credswap-deadpool`, `credswap-bb8`, `credswap-sqlx`) makes one pool follow a
//! [`RotatingCredentials`](crate::RotatingCredentials). What differs between pools is only how
//! the adapter hooks in: where it can wrap a connect, where it sees a checkout and a return,
//! how it closes an idle connection. Everything else lives here, once:
//!
//! | module | concept |
//! |---|---|
//! | [`tag`] | [`ConnectionTag`]: the generation a connection authenticated with, when it opened, and the one staleness rule |
//! | [`classify`] | [`Failure`]: a connect error as an authentication failure, a transient failure or a fatal one, by SQLSTATE and I/O kind |
//! | [`driver`] | [`Driver`]: the one trait an adapter implements for its driver (open, classify, close); the probe and [`validator`] are written on it |
//! | [`connect`] | [`Connector`]: connect with the current credential; wait for a working one after a refused login; retry transient failures; all within a deadline |
//! | [`drain`] | the drain schedule: how often a watcher sweeps while stale connections remain, and when a lease's retirement point comes |
//! | [`stats`] | [`AdapterStats`] and the counters behind them |
//! | [`proof`] | prove before drain: canaries and the probe that prove a new login before old connections go |
//! | [`budget`] | the session budget: the pool's connections and the adapter's probes share its `max_size` |
//! | [`limits`] | the pool's other limits: a maximum session age (with jitter) and connect pacing |
//! | [`adapter`] | [`Adapter`]: what an adapter holds beside its pool (provider, counters, proof, budget) |
//! | [`feedback`] | [`Feedback`]: refused and accepted logins, told to the provider |
//! | [`handle`] | [`Rotation`]: the handle every adapter returns beside its pool, for the application |
//! | [`error`] | [`AdapterError`]: one error vocabulary for every adapter |
//!
//! The contract itself (what an adapter promises) is written in `ARCHITECTURE.md` at the
//! repository root, and tested for every adapter by the conformance suite in
//! `credswap-testkit`.
//!
//! # Writing an adapter
//!
//! A fourth adapter (mobc, diesel-async, a pool of your own) needs this module alone: implement
//! [`Driver`] for the driver, open every connection through a [`Connector`], keep each
//! connection's [`ConnectionTag`] and [`LiveConnection`] with it, and ask
//! [`Adapter::should_close`] at checkout, at return and in a watcher woken by
//! [`RotatingCredentials::subscribe`](crate::RotatingCredentials::subscribe). Return
//! [`Adapter::rotation`] beside the pool. Here is the whole shape over a toy pool and driver:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::future::Future;
//! use std::sync::{Arc, Mutex};
//! use credswap_core::contract::{Adapter, ConnectionTag, Driver, Event, Failure, LiveConnection};
//! use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
//!
//! /// The driver: a database that accepts every login (a real one opens a session).
//! struct Toy;
//! #[derive(Debug)]
//! struct ToyError;
//! impl std::fmt::Display for ToyError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("refused") }
//! }
//! impl std::error::Error for ToyError {}
//! impl Driver for Toy {
//!     type Connection = String; // the user it logged in as
//!     type Error = ToyError;
//!     fn open(&self, c: &Credential) -> impl Future<Output = Result<String, ToyError>> + Send {
//!         std::future::ready(Ok(c.username().to_owned()))
//!     }
//!     fn classify(&self, _: &ToyError) -> Failure { Failure::Auth }
//!     fn close(&self, _: String) -> impl Future<Output = ()> + Send { std::future::ready(()) }
//! }
//!
//! /// The pool: idle connections, each with its tag and live guard.
//! type Idle = Mutex<Vec<(String, ConnectionTag, LiveConnection)>>;
//!
//! let store = MemorySource::new(Credential::new("app_a", "pw-a"));
//! let credentials = RotatingCredentials::new(store.clone(), Policy::default()).await?;
//! let adapter = Adapter::new(credentials.clone());
//! adapter.limit_sessions(4); // the pool's max_size
//! let driver = Arc::new(Toy);
//! adapter.set_driver(Arc::clone(&driver));
//! let connector = adapter.connector(None);
//! let rotation = adapter.rotation(); // what `build()` returns beside the pool
//!
//! // Connect: every connection through the connector.
//! let idle: Idle = Mutex::default();
//! let opened = connector.connect(&*driver).await.map_err(|r| r.into_error())?;
//! idle.lock().unwrap().push((opened.connection, opened.tag, opened.live));
//!
//! // The store rotates; the new login is proven by a connection that opens with it.
//! store.set(Credential::new("app_b", "pw-b"));
//! credentials.refresh().await?;
//! let fresh = connector.connect(&*driver).await.map_err(|r| r.into_error())?;
//! assert_eq!(fresh.connection, "app_b");
//!
//! // Drain: the staleness rule closes the connection of the old login.
//! let current = credentials.load();
//! idle.lock().unwrap().retain(|(_, tag, _)| {
//!     let stale = adapter.should_close(tag, &current, true);
//!     if stale {
//!         adapter.counters().bump(Event::StaleClosed);
//!     }
//!     !stale
//! });
//! assert!(idle.lock().unwrap().is_empty());
//! assert_eq!(rotation.stats().stale_closed, 1);
//! drop(fresh);
//! # Ok(()) }
//! ```

pub mod adapter;
pub mod budget;
pub mod classify;
pub mod connect;
pub mod drain;
pub mod driver;
pub mod error;
pub mod feedback;
pub mod handle;
pub mod limits;
pub mod proof;
pub mod stats;
pub mod tag;

pub use adapter::Adapter;
pub use budget::Slot;
pub use classify::Failure;
pub use connect::{Connected, Connector, Refused};
pub use driver::{Driver, validator};
pub use error::AdapterError;
pub use feedback::Feedback;
pub use handle::Rotation;
pub use stats::{AdapterStats, Counters, Event, LiveConnection};
pub use tag::ConnectionTag;
