//! What a [`VaultSourceBuilder`](crate::VaultSourceBuilder) builds: [`Kv2`], [`DynamicRole`] or
//! [`StaticRole`], its type parameter.
//!
//! Each kind has the builder options that apply to it and no others, so an option set on the
//! wrong kind does not compile:
//!
//! | kind | made by | its own options |
//! |---|---|---|
//! | [`Kv2`] | [`VaultSource::kv2`](crate::VaultSource::kv2) | [`username_field`](crate::VaultSourceBuilder::username_field), [`password_field`](crate::VaultSourceBuilder::password_field), [`username`](crate::VaultSourceBuilder::username), [`version`](crate::VaultSourceBuilder::version) |
//! | [`DynamicRole`] | [`VaultSource::dynamic_role`](crate::VaultSource::dynamic_role) | [`lease_margin`](crate::VaultSourceBuilder::lease_margin), [`refused_lease_grace`](crate::VaultSourceBuilder::refused_lease_grace), [`revoke_on_drop`](crate::VaultSourceBuilder::revoke_on_drop) |
//! | [`StaticRole`] | [`VaultSource::static_role`](crate::VaultSource::static_role) | none |
//!
//! The address, the auth method, the namespace, the timeout and the HTTP client apply to every
//! kind. A function that finishes a builder of any kind takes a `VaultSourceBuilder<K>` with
//! `K: SourceKind`:
//!
//! ```
//! use credswap_vault::kind::SourceKind;
//! use credswap_vault::{BuildError, VaultSource, VaultSourceBuilder};
//!
//! fn local<K: SourceKind>(builder: VaultSourceBuilder<K>) -> Result<VaultSource, BuildError> {
//!     builder.address("http://127.0.0.1:8200").token("dev-root".to_owned()).build()
//! }
//! let kv = local(VaultSource::kv2("secret", "app/db").username_field("user"))?;
//! let role = local(VaultSource::static_role("database", "reporting"))?;
//! # let _ = (kv, role);
//! # Ok::<(), BuildError>(())
//! ```
//!
//! ```compile_fail
//! # use credswap_vault::VaultSource;
//! // `version` is a KV v2 option: a dynamic role has no versions.
//! let builder = VaultSource::dynamic_role("database", "app").version(3);
//! ```

use std::fmt;
use std::time::Duration;

use crate::builder::{DEFAULT_LEASE_MARGIN, DEFAULT_REFUSED_LEASE_GRACE};
use crate::source::Kind;

/// A KV version 2 secret ([`VaultSource::kv2`](crate::VaultSource::kv2)): the builder's
/// [`username_field`](crate::VaultSourceBuilder::username_field),
/// [`password_field`](crate::VaultSourceBuilder::password_field),
/// [`username`](crate::VaultSourceBuilder::username) and
/// [`version`](crate::VaultSourceBuilder::version) apply to it.
#[derive(Debug, Clone)]
pub struct Kv2 {
    pub(crate) mount: String,
    pub(crate) path: String,
    pub(crate) username_field: String,
    pub(crate) password_field: String,
    pub(crate) username: Option<String>,
    pub(crate) version: Option<u64>,
}

/// A database secrets engine's dynamic role
/// ([`VaultSource::dynamic_role`](crate::VaultSource::dynamic_role)): the builder's
/// [`lease_margin`](crate::VaultSourceBuilder::lease_margin),
/// [`refused_lease_grace`](crate::VaultSourceBuilder::refused_lease_grace) and
/// [`revoke_on_drop`](crate::VaultSourceBuilder::revoke_on_drop) apply to it.
#[derive(Debug, Clone)]
pub struct DynamicRole {
    pub(crate) mount: String,
    pub(crate) role: String,
    pub(crate) lease_margin: Duration,
    pub(crate) refused_lease_grace: Duration,
    pub(crate) revoke_on_drop: bool,
}

/// A database secrets engine's static role
/// ([`VaultSource::static_role`](crate::VaultSource::static_role)): no builder option of its
/// own (Vault's role says the user and the rotation period).
#[derive(Debug, Clone)]
pub struct StaticRole {
    pub(crate) mount: String,
    pub(crate) role: String,
}

impl Kv2 {
    pub(crate) fn new(mount: String, path: String) -> Self {
        Self {
            mount,
            path,
            username_field: "username".to_owned(),
            password_field: "password".to_owned(),
            username: None,
            version: None,
        }
    }
}

impl DynamicRole {
    pub(crate) fn new(mount: String, role: String) -> Self {
        Self {
            mount,
            role,
            lease_margin: DEFAULT_LEASE_MARGIN,
            refused_lease_grace: DEFAULT_REFUSED_LEASE_GRACE,
            revoke_on_drop: false,
        }
    }
}

impl StaticRole {
    pub(crate) fn new(mount: String, role: String) -> Self {
        Self { mount, role }
    }
}

/// The kinds a [`VaultSourceBuilder`](crate::VaultSourceBuilder) builds: [`Kv2`],
/// [`DynamicRole`], [`StaticRole`]. Sealed: named in bounds, not implemented outside this
/// crate.
pub trait SourceKind: sealed::Sealed + fmt::Debug {}

impl SourceKind for Kv2 {}
impl SourceKind for DynamicRole {}
impl SourceKind for StaticRole {}

pub(crate) mod sealed {
    use std::time::Duration;

    use crate::source::Kind;

    /// What the source is built from.
    #[derive(Debug)]
    pub struct Parts {
        pub(crate) kind: Kind,
        pub(crate) lease_margin: Duration,
        pub(crate) refused_lease_grace: Duration,
        pub(crate) revoke_on_drop: bool,
    }

    /// Turns a kind into what the source is built from.
    pub trait Sealed {
        fn parts(self) -> Parts;
    }
}

use sealed::Parts;

impl sealed::Sealed for Kv2 {
    fn parts(self) -> Parts {
        Parts {
            kind: Kind::Kv2 {
                mount: self.mount,
                path: self.path,
                username_field: self.username_field,
                password_field: self.password_field,
                username: self.username,
                version: self.version,
            },
            lease_margin: DEFAULT_LEASE_MARGIN,
            refused_lease_grace: DEFAULT_REFUSED_LEASE_GRACE,
            revoke_on_drop: false,
        }
    }
}

impl sealed::Sealed for DynamicRole {
    fn parts(self) -> Parts {
        Parts {
            kind: Kind::Dynamic {
                mount: self.mount,
                role: self.role,
            },
            lease_margin: self.lease_margin,
            refused_lease_grace: self.refused_lease_grace,
            revoke_on_drop: self.revoke_on_drop,
        }
    }
}

impl sealed::Sealed for StaticRole {
    fn parts(self) -> Parts {
        Parts {
            kind: Kind::Static {
                mount: self.mount,
                role: self.role,
            },
            lease_margin: DEFAULT_LEASE_MARGIN,
            refused_lease_grace: DEFAULT_REFUSED_LEASE_GRACE,
            revoke_on_drop: false,
        }
    }
}
