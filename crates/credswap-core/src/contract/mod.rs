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
//! | [`adapter`] | [`Adapter`]: what an adapter holds beside its pool (provider, counters, proof, budget) |
//! | [`feedback`] | [`Feedback`]: refused and accepted logins, told to the provider |
//! | [`handle`] | [`Rotation`]: the handle every adapter returns beside its pool, for the application |
//! | [`error`] | [`AdapterError`]: one error vocabulary for every adapter |
//!
//! The contract itself (what an adapter promises) is written in `ARCHITECTURE.md` at the
//! repository root, and tested for every adapter by the conformance suite in
//! `credswap-testkit`.

pub mod adapter;
pub mod budget;
pub mod classify;
pub mod connect;
pub mod drain;
pub mod driver;
pub mod error;
pub mod feedback;
pub mod handle;
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
