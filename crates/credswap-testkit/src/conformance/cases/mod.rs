//! The conformance cases: each is generic over an [`Adapter`](super::Adapter) and panics with a
//! message that says what broke.
//!
//! Light cases share the machine ([`Route::postgres`](super::Route::postgres)); the load scenarios run alone
//! ([`Route::postgres_alone`](super::Route::postgres_alone)). Each case runs straight to the server ([`Direct`](super::Direct))
//! and, where it applies, through PgBouncer ([`ThroughPgBouncer`](super::ThroughPgBouncer)); the TLS
//! cases start a TLS cluster of their own and the building cases need no server, so they take no
//! route.

mod builder;
mod capture;
mod draining;
mod helpers;
mod lifecycle;
mod minted;
mod pending;
mod refused;
mod scenarios;
mod tls;

pub use builder::{
    building_outside_a_runtime_is_a_clear_error, the_builder_and_the_pool_print_no_secret,
};
pub use draining::{
    busy_connection_commits_across_rotation_then_closes_on_return,
    idle_stale_connections_close_after_a_change, never_more_connections_than_max_size,
};
pub(crate) use helpers::{build, load, wait_for, whoami};
pub use lifecycle::{
    a_server_restart_fails_only_requests_in_flight, dropping_the_pool_stops_every_task,
    leased_credential_connections_retire_before_expiry, nothing_prints_the_password,
};
pub use minted::{
    a_login_that_requires_tls_refuses_a_pool_without_it, connect_pacing_caps_logins_per_second,
    max_session_age_retires_sessions_within_the_pool_size,
    minted_tokens_refresh_under_load_without_closing_a_session,
};
pub use pending::{
    a_full_pool_moves_to_the_pending_credential_before_the_store_finishes,
    the_pending_credential_bridges_a_single_user_rotation,
};
pub use refused::{
    a_mistyped_secret_keeps_the_pool_serving,
    a_password_replaced_before_the_store_is_read_keeps_the_pool_serving,
    auth_failure_at_connect_waits_for_the_new_credential,
    persistent_wrong_password_fails_clearly_without_the_secret,
    validate_before_swap_keeps_the_working_credential,
};
pub use scenarios::{
    alternating_users_rotation_loses_no_request,
    rotations_every_200ms_under_128_workers_stay_within_the_pool,
    single_user_rotation_loses_no_request,
};
pub use tls::{
    rotations_over_verify_full_lose_no_request, the_server_refuses_a_login_without_tls,
    the_validator_connects_over_verify_full, verify_full_refuses_a_wrong_host_name_at_once,
    verify_full_refuses_an_untrusted_ca_at_once,
};

#[cfg(feature = "vault")]
pub use super::misbehaving::a_vault_lease_revoked_from_outside_is_replaced;
pub use super::misbehaving::{
    a_black_holed_store_bounds_every_checkout,
    a_pending_version_moved_mid_trial_is_never_published_unproven,
    a_reverted_rotation_is_followed_back_without_a_restart,
    a_stuck_pending_version_fails_nothing_and_stops_being_tried,
    a_throttling_store_fails_no_request,
};
#[cfg(feature = "aws")]
pub use super::misbehaving::{
    a_reverted_rotation_on_secrets_manager_is_followed_back,
    a_rotation_reverted_while_the_pool_moves_is_followed_back,
    a_stuck_awspending_on_secrets_manager_fails_nothing,
};
pub use super::rejected::a_pg_hba_rejection_fails_fast_as_a_configuration_error;
