//! [`SessionPolicy`]: what to do about sessions still logged in as the inactive user before
//! its password changes (alternating users), and [`SessionsFound`], what was found.

use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::{AsyncSleep, SharedAsyncSleep};

use crate::Error;
use crate::db::Session;

/// How often [`SessionPolicy::Wait`] looks again.
const POLL: Duration = Duration::from_millis(100);
/// How long [`SessionPolicy::Terminate`] waits for terminated sessions to disappear.
const TERMINATE_WAIT: Duration = Duration::from_secs(5);

/// What setSecret does, with alternating users, when sessions are still logged in as the
/// inactive user (the one about to get a new password). Those sessions belong to clients that
/// have not followed the previous rotation; changing the password does not end them, but their
/// next login with the old password fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionPolicy {
    /// Fail the step ([`Error::is_sessions_in_use`], naming the role and the count); the
    /// password is not changed. The default.
    #[default]
    Fail,
    /// Look again every 100 ms until they are gone; fail as `Fail` does when some remain after
    /// the timeout.
    Wait(Duration),
    /// End them (`pg_terminate_backend`; the master credential needs `pg_signal_backend` or
    /// membership in the role), wait up to 5 s for them to go, and go on.
    Terminate,
}

impl SessionPolicy {
    fn describe(self) -> String {
        match self {
            SessionPolicy::Fail => "session policy Fail".to_owned(),
            SessionPolicy::Wait(timeout) => {
                format!("session policy Wait: still there after {timeout:?}")
            }
            SessionPolicy::Terminate => "session policy Terminate".to_owned(),
        }
    }
}

/// The sessions found logged in as the inactive user, and what was done about them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionsFound {
    /// The user (role) whose sessions were checked: the inactive one.
    pub username: String,
    /// The policy applied.
    pub policy: SessionPolicy,
    /// Sessions logged in as the role when first checked.
    pub found: usize,
    /// Sessions `pg_terminate_backend` signalled ([`SessionPolicy::Terminate`]).
    pub terminated: usize,
    /// How long the step waited for sessions to go.
    pub waited: Duration,
}

/// Counts the sessions of `role` (other than `session` itself) and applies `policy`.
pub(crate) async fn check(
    session: &mut Session,
    role: &str,
    policy: SessionPolicy,
    sleep: Option<&SharedAsyncSleep>,
) -> Result<SessionsFound, Error> {
    let started = Instant::now();
    let found = count(session, role).await?;
    let mut report = SessionsFound {
        username: role.to_owned(),
        policy,
        found,
        terminated: 0,
        waited: Duration::ZERO,
    };
    if found == 0 {
        return Ok(report);
    }
    tracing::info!(
        role,
        sessions = found,
        ?policy,
        "sessions still logged in as the inactive user"
    );
    let wait = match policy {
        SessionPolicy::Fail => return Err(Error::sessions_in_use(role, found, policy.describe())),
        SessionPolicy::Wait(timeout) => timeout,
        SessionPolicy::Terminate => {
            report.terminated = terminate(session, role).await?;
            TERMINATE_WAIT
        }
    };
    let Some(sleep) = sleep else {
        return Err(Error::config(
            "the Secrets Manager client has no sleep implementation (waiting for sessions needs \
             one; the SDK's default with the rt-tokio feature has it)",
        ));
    };
    let mut remaining = found;
    while remaining > 0 {
        if started.elapsed() >= wait {
            report.waited = started.elapsed();
            if policy == SessionPolicy::Terminate {
                // Signalled but slow to exit: they are going; the password may change.
                tracing::warn!(
                    role,
                    sessions = remaining,
                    "terminated sessions have not exited yet"
                );
                return Ok(report);
            }
            return Err(Error::sessions_in_use(role, remaining, policy.describe()));
        }
        sleep.sleep(POLL).await;
        remaining = count(session, role).await?;
    }
    report.waited = started.elapsed();
    tracing::info!(
        role,
        found = report.found,
        terminated = report.terminated,
        waited_ms = report.waited.as_millis() as u64,
        "sessions of the inactive user are gone"
    );
    Ok(report)
}

/// Sessions logged in as `role`, other than this one.
async fn count(session: &mut Session, role: &str) -> Result<usize, Error> {
    let row = session
        .driver
        .run(session.client.query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE usename = $1 AND pid <> pg_backend_pid()",
            &[&role],
        ))
        .await
        .map_err(|e| {
            Error::database(
                format!("counting the sessions of role {role}"),
                Some(role),
                Some(e),
            )
        })?;
    Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// `pg_terminate_backend` for every session of `role`; how many were signalled.
async fn terminate(session: &mut Session, role: &str) -> Result<usize, Error> {
    let row = session
        .driver
        .run(session.client.query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE usename = $1 AND pid <> pg_backend_pid()",
            &[&role],
        ))
        .await
        .map_err(|e| {
            Error::database(
                format!("terminating the sessions of role {role}"),
                Some(role),
                Some(e),
            )
        })?;
    Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}
