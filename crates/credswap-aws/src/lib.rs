//! AWS Secrets Manager as a credswap credential source (work in progress).
#![forbid(unsafe_code)]
