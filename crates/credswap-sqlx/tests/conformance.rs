//! The adapter contract (`credswap_testkit::conformance`), once per enabled sqlx version: the
//! adapters in `support/conformance.rs` are compiled into `sqlx_0_8` and `sqlx_0_9`.

mod support;

#[cfg(feature = "sqlx-0_8")]
mod sqlx_0_8 {
    use credswap_sqlx::v0_8 as adapter;

    const NAME: &str = "sqlx 0.8";

    fn statements(sql: &str) -> &str {
        sql
    }

    include!("support/conformance.rs");
}

#[cfg(feature = "sqlx-0_9")]
mod sqlx_0_9 {
    use credswap_sqlx::v0_9 as adapter;
    use sqlx09 as sqlx;

    const NAME: &str = "sqlx 0.9";

    fn statements(sql: &str) -> sqlx::AssertSqlSafe<String> {
        sqlx::AssertSqlSafe(sql.to_owned())
    }

    include!("support/conformance.rs");
}
