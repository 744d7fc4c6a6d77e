//! The Secrets Manager rotation protocol for PostgreSQL (work in progress).
#![forbid(unsafe_code)]
