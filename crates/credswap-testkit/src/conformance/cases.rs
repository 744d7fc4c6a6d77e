//! The conformance cases: each is generic over an [`Adapter`](super::Adapter) and panics with a
//! message that says what broke.
#![allow(missing_docs)]

use super::Adapter;

pub async fn alternating_users_rotation_loses_no_request<A: Adapter>() {
    unimplemented!("conformance case for {}", A::NAME)
}
pub async fn single_user_rotation_loses_no_request<A: Adapter>() {
    unimplemented!("conformance case for {}", A::NAME)
}
pub async fn idle_stale_connections_close_after_a_change<A: Adapter>() {
    unimplemented!("conformance case for {}", A::NAME)
}
pub async fn busy_connection_commits_across_rotation_then_closes_on_return<A: Adapter>() {
    unimplemented!("conformance case for {}", A::NAME)
}
pub async fn never_more_connections_than_max_size<A: Adapter>() {
    unimplemented!("conformance case for {}", A::NAME)
}
pub async fn auth_failure_at_connect_waits_for_the_new_credential<A: Adapter>() {
    unimplemented!("conformance case for {}", A::NAME)
}
pub async fn persistent_wrong_password_fails_clearly_without_the_secret<A: Adapter>() {
    unimplemented!("conformance case for {}", A::NAME)
}
pub async fn validate_before_swap_keeps_the_working_credential<A: Adapter>() {
    unimplemented!("conformance case for {}", A::NAME)
}
pub async fn without_validation_errors_are_clear_and_the_pool_recovers<A: Adapter>() {
    unimplemented!("conformance case for {}", A::NAME)
}
pub async fn leased_credential_connections_retire_before_expiry<A: Adapter>() {
    unimplemented!("conformance case for {}", A::NAME)
}
pub async fn dropping_the_pool_stops_every_task<A: Adapter>() {
    unimplemented!("conformance case for {}", A::NAME)
}
pub async fn nothing_prints_the_password<A: Adapter>() {
    unimplemented!("conformance case for {}", A::NAME)
}
