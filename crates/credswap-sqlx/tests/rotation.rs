//! What is specific to the sqlx adapter, against a real PostgreSQL with scram-sha-256
//! authentication, once per enabled sqlx version: the cases in `support/specific.rs` are
//! compiled into `sqlx_0_8` and `sqlx_0_9`. The adapter contract itself is `conformance.rs`.

mod support;

#[cfg(feature = "sqlx-0_8")]
mod sqlx_0_8 {
    use credswap_sqlx::v0_8 as adapter;

    include!("support/specific.rs");
}

#[cfg(feature = "sqlx-0_9")]
mod sqlx_0_9 {
    use credswap_sqlx::v0_9 as adapter;
    use sqlx09 as sqlx;

    include!("support/specific.rs");
}
