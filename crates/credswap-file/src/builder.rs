//! How a [`FileSource`] is built: the path, what it holds ([`Layout`]), the watcher's timing.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::source::FileSource;
use credswap_core::source::BuildError;

/// What the configured path holds.
///
/// [`FromStr`] takes the names a command line would use: `auto`, `dir` (or `directory`),
/// `password` (or `plain`), `json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Layout {
    /// Decided at each read: a directory is [`Directory`](Self::Directory); a file whose first
    /// non-blank character is `{` is [`Json`](Self::Json), any other file a
    /// [`PasswordFile`](Self::PasswordFile).
    #[default]
    Auto,
    /// A directory with one file per key, as a Kubernetes secret volume (or the Secrets Store
    /// CSI driver) mounts it: `password` (required), `username` (else the configured username),
    /// and optionally `host`, `port`, `dbname`. The key names of the login are configurable.
    Directory,
    /// A file holding only the password; the username is the configured one.
    PasswordFile,
    /// A file holding RDS/Aurora-style JSON (`username`, `password`, optional `engine`, `host`,
    /// `port`, `dbname`), as a Vault Agent template or a CSI provider for AWS writes it.
    Json,
}

impl Layout {
    /// The name [`FromStr`] takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Auto => "auto",
            Layout::Directory => "dir",
            Layout::PasswordFile => "password",
            Layout::Json => "json",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Layout {
    type Err = BuildError;

    fn from_str(s: &str) -> Result<Self, BuildError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Layout::Auto),
            "dir" | "directory" => Ok(Layout::Directory),
            "password" | "plain" => Ok(Layout::PasswordFile),
            "json" => Ok(Layout::Json),
            other => Err(BuildError::new(format!(
                "unknown file layout \"{other}\" (expected auto, dir, password or json)"
            ))),
        }
    }
}

/// The settings of a built source (read by the source and its watcher).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) path: PathBuf,
    pub(crate) layout: Layout,
    pub(crate) username: Option<String>,
    pub(crate) username_field: String,
    pub(crate) password_field: String,
    pub(crate) strip_newline: bool,
    pub(crate) poll_interval: Duration,
    pub(crate) settle: Duration,
}

/// Builds a [`FileSource`]; see [`FileSource::builder`].
///
/// ```
/// use std::time::Duration;
/// use credswap_file::{FileSource, Layout};
///
/// // A Kubernetes secret volume with the keys `user` and `pass`.
/// let source = FileSource::builder("/var/run/secrets/db")
///     .layout(Layout::Directory)
///     .username_field("user")
///     .password_field("pass")
///     .build()?;
///
/// // A Vault Agent sink holding only the password of `app`.
/// let source = FileSource::builder("/vault/secrets/db-password")
///     .layout("password".parse()?)
///     .username("app")
///     .poll_interval(Duration::from_secs(2))
///     .build()?;
/// # let _ = source;
/// # Ok::<(), credswap_file::BuildError>(())
/// ```
///
/// An option that does not apply to the [`Layout`] is a [`build`](Self::build) error, not
/// ignored: [`username_field`](Self::username_field) and
/// [`password_field`](Self::password_field) name files of a directory (layout `Directory` or
/// `Auto`), [`strip_newline`](Self::strip_newline) applies to key files and password files, not
/// to JSON.
///
/// ```
/// use credswap_file::{FileSource, Layout};
///
/// let err = FileSource::builder("/vault/secrets/db.json")
///     .layout(Layout::Json)
///     .password_field("pass")
///     .build()
///     .unwrap_err();
/// assert!(err.to_string().contains("password_field"), "{err}");
/// ```
#[must_use]
pub struct FileSourceBuilder {
    config: Config,
    /// The options given that apply to some layouts only.
    username_field_set: bool,
    password_field_set: bool,
    strip_newline_set: bool,
}

impl FileSourceBuilder {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            config: Config {
                path,
                layout: Layout::Auto,
                username: None,
                username_field: "username".to_owned(),
                password_field: "password".to_owned(),
                strip_newline: true,
                poll_interval: Duration::from_secs(5),
                settle: Duration::from_millis(50),
            },
            username_field_set: false,
            password_field_set: false,
            strip_newline_set: false,
        }
    }

    /// What the path holds ([`Layout::Auto`] by default).
    pub fn layout(mut self, layout: Layout) -> Self {
        self.config.layout = layout;
        self
    }

    /// The login role for a plain password file, for a directory without a username file and
    /// for JSON without a `username` field. A username the secret holds wins.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.config.username = Some(username.into());
        self
    }

    /// The directory's file holding the username (`username` by default). A directory
    /// layout's option ([`Layout::Directory`], or [`Layout::Auto`] finding a directory): with
    /// another layout, [`build`](Self::build) fails.
    pub fn username_field(mut self, name: impl Into<String>) -> Self {
        self.config.username_field = name.into();
        self.username_field_set = true;
        self
    }

    /// The directory's file holding the password (`password` by default). A directory
    /// layout's option, like [`username_field`](Self::username_field).
    pub fn password_field(mut self, name: impl Into<String>) -> Self {
        self.config.password_field = name.into();
        self.password_field_set = true;
        self
    }

    /// Whether one trailing line ending (`\n`, `\r\n`) is dropped from the password, username,
    /// host, port and dbname files (yes by default: `echo` and most editors leave one; a
    /// Kubernetes secret made with `--from-file` keeps it). Not an option of
    /// [`Layout::Json`] (JSON has no trailing newline to strip): with it, [`build`](Self::build)
    /// fails.
    pub fn strip_newline(mut self, strip: bool) -> Self {
        self.config.strip_newline = strip;
        self.strip_newline_set = true;
        self
    }

    /// How often the watcher re-reads the files whatever the file system reports (5 s by
    /// default): the fallback for file systems without change events (NFS, some FUSE CSI
    /// drivers) and for a watch that was lost.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }

    /// How long the watcher waits for the file system to go quiet after a change event before
    /// it reads (50 ms by default), so a writer's several steps are read once, complete.
    pub fn settle(mut self, settle: Duration) -> Self {
        self.config.settle = settle;
        self
    }

    /// Builds the source. The path need not exist yet (a Vault Agent sink is written after the
    /// application starts); reading it then is *unavailable* until it appears.
    ///
    /// Fails when the path is empty, a field is not a plain file name (empty, `.`/`..`, or with
    /// a path separator), the username is empty, the poll interval is zero, the settle time is
    /// over a minute, or an option was given that does not apply to the layout
    /// ([`username_field`](Self::username_field) or [`password_field`](Self::password_field)
    /// with a single file, [`strip_newline`](Self::strip_newline) with JSON).
    pub fn build(self) -> Result<FileSource, BuildError> {
        let c = &self.config;
        if c.path.as_os_str().is_empty() {
            return Err(BuildError::new("the path of the file source is empty"));
        }
        if matches!(c.layout, Layout::PasswordFile | Layout::Json) {
            for (what, set) in [
                ("username_field", self.username_field_set),
                ("password_field", self.password_field_set),
            ] {
                if set {
                    return Err(BuildError::new(format!(
                        "{what} names a file of a directory (layout dir or auto), \
                         but the layout is {}",
                        c.layout
                    )));
                }
            }
        }
        if c.layout == Layout::Json && self.strip_newline_set {
            return Err(BuildError::new(
                "strip_newline applies to key files and password files, but the layout is json",
            ));
        }
        for (what, key) in [
            ("username_field", &c.username_field),
            ("password_field", &c.password_field),
        ] {
            if key.is_empty()
                || key == "."
                || key == ".."
                || key.contains('/')
                || key.contains(std::path::MAIN_SEPARATOR)
                || key.contains('\0')
            {
                return Err(BuildError::new(format!(
                    "{what} \"{key}\" is not a file name inside the directory"
                )));
            }
        }
        if c.username_field == c.password_field {
            return Err(BuildError::new(
                "username_field and password_field name the same file",
            ));
        }
        if c.username.as_deref().is_some_and(str::is_empty) {
            return Err(BuildError::new("the username is empty"));
        }
        if c.poll_interval.is_zero() {
            return Err(BuildError::new("poll_interval must be more than zero"));
        }
        if c.settle > Duration::from_secs(60) {
            return Err(BuildError::new("settle must be at most a minute"));
        }
        Ok(FileSource::new(self.config))
    }
}

impl fmt::Debug for FileSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSourceBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_parse_from_their_names() {
        for layout in [
            Layout::Auto,
            Layout::Directory,
            Layout::PasswordFile,
            Layout::Json,
        ] {
            assert_eq!(layout.as_str().parse::<Layout>().unwrap(), layout);
            assert_eq!(layout.to_string(), layout.as_str());
        }
        assert_eq!("Directory".parse::<Layout>().unwrap(), Layout::Directory);
        assert_eq!("plain".parse::<Layout>().unwrap(), Layout::PasswordFile);
        let err = "yaml".parse::<Layout>().unwrap_err();
        assert!(
            err.to_string().contains("auto, dir, password or json"),
            "{err}"
        );
    }

    #[test]
    fn build_checks_its_settings() {
        let bad = |b: FileSourceBuilder| b.build().unwrap_err().to_string();
        assert!(bad(FileSource::builder("")).contains("empty"));
        assert!(
            bad(FileSource::builder("/x").password_field("../etc/passwd"))
                .contains("password_field")
        );
        assert!(bad(FileSource::builder("/x").username_field("..")).contains("username_field"));
        assert!(bad(FileSource::builder("/x").username_field("")).contains("username_field"));
        assert!(bad(FileSource::builder("/x").username_field("password")).contains("same file"));
        assert!(bad(FileSource::builder("/x").username("")).contains("username"));
        assert!(
            bad(FileSource::builder("/x").poll_interval(Duration::ZERO)).contains("poll_interval")
        );
        assert!(bad(FileSource::builder("/x").settle(Duration::from_secs(61))).contains("settle"));
        // An option of another layout is an error, not ignored.
        let json = || FileSource::builder("/x").layout(Layout::Json);
        assert!(bad(json().username_field("user")).contains("username_field"));
        assert!(bad(json().password_field("pass")).contains("layout is json"));
        assert!(bad(json().strip_newline(false)).contains("strip_newline"));
        let plain = || FileSource::builder("/x").layout(Layout::PasswordFile);
        assert!(bad(plain().password_field("pass")).contains("layout is password"));
        for layout in [Layout::Auto, Layout::Directory] {
            FileSource::builder("/x")
                .layout(layout)
                .username_field("user")
                .password_field("pass")
                .strip_newline(false)
                .build()
                .unwrap();
        }
        plain()
            .strip_newline(false)
            .username("app")
            .build()
            .unwrap();
        let source = FileSource::builder("/does/not/exist/yet")
            .layout(Layout::Json)
            .username("app")
            .build()
            .unwrap();
        assert_eq!(source.path(), std::path::Path::new("/does/not/exist/yet"));
        assert_eq!(source.layout(), Layout::Json);
    }
}
