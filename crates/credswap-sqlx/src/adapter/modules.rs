// The adapter's modules and public items, `include!`d by `v0_8.rs` and `v0_9.rs` into a module
// where `sqlx` names that sqlx version.

#[path = "builder.rs"]
mod builder;
#[path = "connect.rs"]
mod connect;
#[path = "driver.rs"]
mod driver;
#[path = "drain.rs"]
mod drain;
#[path = "error.rs"]
mod error;
#[path = "handle.rs"]
mod handle;
#[path = "tag.rs"]
mod tag;

pub use builder::{Builder, connect, connect_lazy_with, connect_with};
pub use credswap_core::contract::driver::VALIDATION_TIMEOUT;
pub use driver::connection_validator;
pub use error::{Error, is_auth_failure};
pub use handle::{AdapterStats, PoolExt, Rotation};
