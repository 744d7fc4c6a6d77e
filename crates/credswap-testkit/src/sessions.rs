//! Observing and ending server sessions through `pg_stat_activity`: what rotation drills check
//! to prove that pools let go of an old credential.

use std::time::SystemTime;

use crate::{Error, TestPostgres};

impl TestPostgres {
    /// Number of sessions in `pg_stat_activity` whose `usename` is one of `roles`.
    ///
    /// # Errors
    ///
    /// [`Error::is_query`].
    pub async fn count_sessions(&self, roles: &[&str]) -> Result<usize, Error> {
        let count: i64 = self
            .admin()
            .await?
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY($1)",
                &[&roles],
            )
            .await
            .map_err(|e| Error::query("counting sessions", e))?
            .get(0);
        Ok(to_usize(count))
    }

    /// Number of sessions whose `usename` is one of `roles` and whose `backend_start` is before
    /// `before`: the sessions that outlived a moment such as a rotation.
    ///
    /// # Errors
    ///
    /// [`Error::is_query`].
    pub async fn count_sessions_started_before(
        &self,
        roles: &[&str],
        before: SystemTime,
    ) -> Result<usize, Error> {
        let count: i64 = self
            .admin()
            .await?
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE usename = ANY($1) AND backend_start < $2",
                &[&roles, &before],
            )
            .await
            .map_err(|e| Error::query("counting sessions started before a time", e))?
            .get(0);
        Ok(to_usize(count))
    }

    /// The `backend_start` of each session of `role`, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::is_query`].
    pub async fn session_start_times(&self, role: &str) -> Result<Vec<SystemTime>, Error> {
        let rows = self
            .admin()
            .await?
            .query(
                "SELECT backend_start FROM pg_stat_activity \
                 WHERE usename = $1 AND backend_start IS NOT NULL ORDER BY backend_start",
                &[&role],
            )
            .await
            .map_err(|e| Error::query(format!("listing the sessions of role {role}"), e))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// `pg_terminate_backend` for every session of `role`; returns how many were signalled.
    ///
    /// Termination is asynchronous: the sessions disappear from `pg_stat_activity` shortly after.
    ///
    /// # Errors
    ///
    /// [`Error::is_query`].
    pub async fn terminate_sessions(&self, role: &str) -> Result<usize, Error> {
        let count: i64 = self
            .admin()
            .await?
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE usename = $1 AND pid <> pg_backend_pid()",
                &[&role],
            )
            .await
            .map_err(|e| Error::query(format!("terminating the sessions of role {role}"), e))?
            .get(0);
        Ok(to_usize(count))
    }
}

/// A `count(*)` is never negative.
fn to_usize(count: i64) -> usize {
    usize::try_from(count).unwrap_or(0)
}
