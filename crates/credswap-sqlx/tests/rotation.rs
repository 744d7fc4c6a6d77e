//! The adapter contract against a real PostgreSQL with scram-sha-256 authentication, once per
//! enabled sqlx version: the cases in `support/cases.rs` are compiled into `v0_8` and `v0_9`.

mod support;

#[cfg(feature = "sqlx-0_8")]
mod v0_8 {
    use credswap_sqlx::v0_8 as adapter;

    include!("support/cases.rs");
}

#[cfg(feature = "sqlx-0_9")]
mod v0_9 {
    use credswap_sqlx::v0_9 as adapter;
    use sqlx09 as sqlx;

    include!("support/cases.rs");
}
