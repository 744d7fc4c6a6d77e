//! The rotation strategies and the roles and store of one scenario.

use std::fmt;
use std::str::FromStr;

use credswap_core::{Credential, MemorySource};

use crate::{Error, TestPostgres, random_password, unique_name};

/// How the rotator rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Two roles take turns; the previous one stays valid for an overlap, then is revoked.
    AlternatingUsers,
    /// One role; `ALTER ROLE ... PASSWORD` kills the old password before the store knows the new.
    SingleUser,
}

impl Strategy {
    /// Both strategies.
    pub const ALL: [Strategy; 2] = [Strategy::AlternatingUsers, Strategy::SingleUser];

    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::AlternatingUsers => "alternating-users",
            Strategy::SingleUser => "single-user",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "alternating-users" => Ok(Strategy::AlternatingUsers),
            "single-user" => Ok(Strategy::SingleUser),
            other => Err(format!(
                "unknown strategy `{other}`; expected `alternating-users` or `single-user`"
            )),
        }
    }
}

/// The database roles and the secret store of one scenario.
#[derive(Debug)]
pub struct RotationSetup {
    pub(super) strategy: Strategy,
    pub(super) roles: Vec<String>,
    pub(super) store: MemorySource,
    initial: Credential,
}

impl RotationSetup {
    /// Creates the roles (fresh, uniquely named) and a store holding the first credential.
    pub async fn create(pg: &TestPostgres, strategy: Strategy) -> Result<Self, Error> {
        let password = random_password();
        let roles = match strategy {
            Strategy::AlternatingUsers => {
                let prefix = unique_name("alt");
                let other = random_password();
                let pair = pg
                    .create_alternating_pair(&prefix, [&password, &other])
                    .await?;
                pair.users.to_vec()
            }
            Strategy::SingleUser => {
                let role = unique_name("single");
                pg.create_login_role(&role, &password).await?;
                vec![role]
            }
        };
        let initial = Credential::new(roles[0].clone(), password);
        Ok(Self {
            strategy,
            store: MemorySource::new(initial.clone()),
            roles,
            initial,
        })
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The application's secret store: build the provider under test over a clone of it.
    pub fn store(&self) -> &MemorySource {
        &self.store
    }

    /// The application's login roles (one, or the alternating two).
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// The credential the store holds before the first rotation.
    pub fn initial_credential(&self) -> &Credential {
        &self.initial
    }
}
