//! [`Step`]: the four steps of the Secrets Manager rotation protocol, and what each one reports.

use std::fmt;
use std::str::FromStr;

use crate::sessions::SessionsFound;

/// One step of the rotation protocol, as Secrets Manager names it in a rotation function's
/// event (`"Step": "createSecret"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Generate the new credential and store it as `AWSPENDING` under the token.
    CreateSecret,
    /// Change the database so the `AWSPENDING` credential logs in.
    SetSecret,
    /// Log in with the `AWSPENDING` credential and run a query.
    TestSecret,
    /// Move `AWSCURRENT` to the token's version (`AWSPREVIOUS` follows) and remove
    /// `AWSPENDING`.
    FinishSecret,
}

impl Step {
    /// The four steps in protocol order.
    pub const ALL: [Step; 4] = [
        Step::CreateSecret,
        Step::SetSecret,
        Step::TestSecret,
        Step::FinishSecret,
    ];

    /// The protocol's name of the step: `createSecret`, `setSecret`, `testSecret`,
    /// `finishSecret`.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::CreateSecret => "createSecret",
            Step::SetSecret => "setSecret",
            Step::TestSecret => "testSecret",
            Step::FinishSecret => "finishSecret",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The step name of a rotation event was not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown rotation step {0:?} (expected createSecret, setSecret, testSecret or finishSecret)"
)]
pub struct UnknownStep(String);

impl FromStr for Step {
    type Err = UnknownStep;

    /// Parses the protocol's names (`createSecret`, ...), as a rotation event carries them.
    fn from_str(s: &str) -> Result<Step, UnknownStep> {
        Step::ALL
            .into_iter()
            .find(|step| step.as_str() == s)
            .ok_or_else(|| UnknownStep(s.to_owned()))
    }
}

/// Whether a step changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The step did its work now.
    Done,
    /// The step's work was already done for this token (a re-run, or a rotation that had
    /// already finished): nothing was changed.
    AlreadyDone,
}

/// What one step did. Holds no secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StepReport {
    /// The step.
    pub step: Step,
    /// The token (version id) the step worked on.
    pub token: String,
    /// Whether it changed anything.
    pub outcome: Outcome,
    /// The user of the pending credential (for alternating users, the inactive one).
    pub username: Option<String>,
    /// setSecret with alternating users: the clone role was created now (first rotation).
    pub created_role: bool,
    /// setSecret with alternating users: the sessions found logged in as the inactive user
    /// before its password changed, and what was done about them.
    pub sessions: Option<SessionsFound>,
}

impl StepReport {
    pub(crate) fn new(step: Step, token: &str, outcome: Outcome) -> StepReport {
        StepReport {
            step,
            token: token.to_owned(),
            outcome,
            username: None,
            created_role: false,
            sessions: None,
        }
    }

    pub(crate) fn user(mut self, username: &str) -> StepReport {
        self.username = Some(username.to_owned());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for step in Step::ALL {
            assert_eq!(step.as_str().parse::<Step>(), Ok(step));
            assert_eq!(step.to_string(), step.as_str());
        }
        assert!("CreateSecret".parse::<Step>().is_err());
    }
}
