//! [`FileSource`]: reads a directory of key files or a single file, consistently across a
//! Kubernetes `..data` swap, and never publishes a half-written value.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use credswap_core::{Credential, CredentialSource, RotatingCredentials, SourceError};

use crate::builder::{Config, FileSourceBuilder, Layout};
use crate::error::{WatchError, io_error};
use crate::secret::{
    self, DatabaseSecret, Fingerprint, SecretDetails, looks_like_json, malformed_is, parse_json,
    parse_port,
};
use crate::watch::{Changes, FileWatch};

/// The symlink Kubernetes' atomic writer (secret, configMap and projected volumes; the Secrets
/// Store CSI driver) points at the current timestamped directory (`..2026_11_26_10_00_00.1`).
pub const DATA_LINK: &str = "..data";

/// How many reads a [`FileSource`] has made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Reads of the files (fetches, and the watcher's reads), also the failed ones.
    pub reads: u64,
    /// Reads that failed (unavailable, denied or malformed).
    pub failed_reads: u64,
    /// Reads refused as malformed: empty, half-written or incomplete files.
    pub malformed_reads: u64,
}

/// A [`CredentialSource`] reading a mounted secret: a Kubernetes secret volume, a Secrets Store
/// CSI mount, a Vault Agent sink, any file.
///
/// Build it with [`FileSource::builder`]; the [`Layout`] says what the path holds. Every
/// [`fetch`](CredentialSource::fetch) reads the files (on Tokio's blocking pool), so the
/// provider's periodic refresh always sees the current content. A cheap [`Clone`]: give one
/// clone to the provider and keep one to [`watch`](Self::watch) it.
///
/// - **Consistent across a `..data` swap.** When the directory has a `..data` symlink (how
///   Kubernetes and the CSI driver publish a new version atomically), the files are read through
///   the directory it points at, and the link is checked again afterwards: a read that raced a
///   swap is repeated (up to three times), so a username from one version never meets the
///   password of another. The credential's version is the target's name.
/// - **Never half-written.** An empty file, JSON that does not parse, a missing field or a
///   `username` file without a `password` file is [`malformed`](SourceError::is_malformed):
///   the provider keeps serving the last good credential. The message names the file and the
///   field, never a value.
/// - **Version and issue time.** Without `..data` the version is `content-` and a keyed hash of
///   what was read (the key is random per process, so it says nothing about the password); the
///   password file's modification time is the credential's `issued_at`.
///
/// `Debug` prints the settings and [`Stats`], never a password.
#[derive(Clone)]
pub struct FileSource {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    details: Mutex<Option<SecretDetails>>,
    reads: AtomicU64,
    failed_reads: AtomicU64,
    malformed_reads: AtomicU64,
}

/// One successful read: the secret and the fingerprint of what was read.
pub(crate) struct Read {
    pub(crate) secret: DatabaseSecret,
    pub(crate) fingerprint: Fingerprint,
}

/// A read, or `None` when `..data` moved while the files were read (read again).
type Attempt = Option<Read>;

/// What one file held, if it exists.
struct Content {
    bytes: Vec<u8>,
    modified: Option<SystemTime>,
}

impl FileSource {
    /// A builder for the directory or file at `path`.
    pub fn builder(path: impl Into<PathBuf>) -> FileSourceBuilder {
        FileSourceBuilder::new(path.into())
    }

    pub(crate) fn new(config: Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                details: Mutex::new(None),
                reads: AtomicU64::new(0),
                failed_reads: AtomicU64::new(0),
                malformed_reads: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The configured path.
    pub fn path(&self) -> &Path {
        &self.inner.config.path
    }

    /// The configured layout.
    pub fn layout(&self) -> Layout {
        self.inner.config.layout
    }

    /// The directory the watcher watches: the path itself for a directory, else the file's
    /// parent (a file replaced by a rename or a `..data` swap is a new inode; its directory is
    /// the same).
    pub fn watched_dir(&self) -> PathBuf {
        let path = &self.inner.config.path;
        if self.inner.config.layout == Layout::Directory || path.is_dir() {
            return path.clone();
        }
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Reads the files now: the credential and the non-secret details (host, port, dbname,
    /// engine), for building connect options or a `credswap check`.
    pub async fn fetch_secret(&self) -> Result<DatabaseSecret, SourceError> {
        self.read().await.map(|read| read.secret)
    }

    /// The details of the last successful read, if any.
    pub fn details(&self) -> Option<SecretDetails> {
        lock(&self.inner.details).clone()
    }

    /// How many reads were made.
    pub fn stats(&self) -> Stats {
        Stats {
            reads: self.inner.reads.load(Ordering::Relaxed),
            failed_reads: self.inner.failed_reads.load(Ordering::Relaxed),
            malformed_reads: self.inner.malformed_reads.load(Ordering::Relaxed),
        }
    }

    /// Starts watching the files; the returned [`Changes`] wakes whenever they hold a new,
    /// complete credential. See [`Changes`] for how; dropping it stops the watcher.
    ///
    /// # Errors
    ///
    /// [`WatchError::NoRuntime`] outside a Tokio runtime.
    pub fn changes(&self) -> Result<Changes, WatchError> {
        Changes::start(self.clone())
    }

    /// Wakes `credentials` early: starts the watcher and refreshes the provider (a
    /// [`RotatingCredentials::refresh`]) each time the files hold a new, complete credential,
    /// and once at the start (a change between the provider's first fetch and the watch). The
    /// provider's own periodic refresh goes on regardless.
    ///
    /// Keep the returned [`FileWatch`] as long as the provider: dropping it stops the watcher.
    /// It holds a provider handle, so the provider's refresher also lives until it is dropped.
    ///
    /// # Errors
    ///
    /// [`WatchError::NoRuntime`] outside a Tokio runtime.
    pub fn watch(&self, credentials: &RotatingCredentials) -> Result<FileWatch, WatchError> {
        FileWatch::start(self.changes()?, credentials.clone())
    }

    pub(crate) async fn read(&self) -> Result<Read, SourceError> {
        let inner = self.inner.clone();
        let result = match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::spawn_blocking(move || inner.read())
                .await
                .unwrap_or_else(|e| {
                    Err(SourceError::other("reading the secret files panicked").with_source(e))
                }),
            Err(_) => inner.read(),
        };
        match &result {
            Ok(read) => *lock(&self.inner.details) = Some(read.secret.details().clone()),
            Err(e) => {
                self.inner.failed_reads.fetch_add(1, Ordering::Relaxed);
                if e.is_malformed() {
                    self.inner.malformed_reads.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        result
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn read(&self) -> Result<Read, SourceError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        for _ in 0..3 {
            if let Some(read) = self.read_once()? {
                return Ok(read);
            }
        }
        Err(SourceError::unavailable(format!(
            "{}: {DATA_LINK} was swapped during each of three reads",
            self.config.path.display()
        )))
    }

    fn read_once(&self) -> Result<Attempt, SourceError> {
        let c = &self.config;
        let is_dir = fs::metadata(&c.path)
            .map_err(|e| io_error(&c.path, e))?
            .is_dir();
        match (c.layout, is_dir) {
            (Layout::Auto | Layout::Directory, true) => self.read_directory(),
            (Layout::Directory, false) => Err(malformed_is(
                &format!("{}", c.path.display()),
                "is a file, but the layout is a directory of key files",
            )),
            (Layout::PasswordFile | Layout::Json, true) => Err(malformed_is(
                &format!("{}", c.path.display()),
                format_args!(
                    "is a directory, but the layout is a single {} file",
                    if c.layout == Layout::Json {
                        "JSON"
                    } else {
                        "password"
                    }
                ),
            )),
            (_, false) => self.read_file(),
        }
    }

    /// A directory of key files, read through `..data` when there is one.
    fn read_directory(&self) -> Result<Attempt, SourceError> {
        let c = &self.config;
        let target = data_target(&c.path)?;
        let dir = match &target {
            Some(target) => c.path.join(target),
            None => c.path.clone(),
        };
        let result = self.read_key_files(&dir, target.as_ref());
        if target.is_some() && data_target(&c.path)? != target {
            return Ok(None);
        }
        result.map(Some)
    }

    fn read_key_files(&self, dir: &Path, target: Option<&OsString>) -> Result<Read, SourceError> {
        let c = &self.config;
        // Named as the application sees them (`dir/password`), not through `..data`.
        let shown = |key: &str| c.path.join(key);
        let read = |key: &str| read_optional(&dir.join(key), &shown(key));
        let password = read(&c.password_field)?;
        let username = read(&c.username_field)?;
        let host = read("host")?;
        let port = read("port")?;
        let dbname = read("dbname")?;
        let directory = format!("directory {}", c.path.display());
        let Some(password) = password else {
            let what = if username.is_some() {
                format!(
                    "has a \"{}\" file but no \"{}\" file",
                    c.username_field, c.password_field
                )
            } else {
                format!("has no \"{}\" file", c.password_field)
            };
            return Err(malformed_is(&directory, what));
        };
        let fingerprint = Fingerprint::of([
            username.as_ref().map(|u| &u.bytes[..]),
            Some(&password.bytes[..]),
            host.as_ref().map(|h| &h.bytes[..]),
            port.as_ref().map(|p| &p.bytes[..]),
            dbname.as_ref().map(|d| &d.bytes[..]),
        ]);
        let username = match username {
            Some(u) => self.text(&shown(&c.username_field), u.bytes)?,
            None => c.username.clone().ok_or_else(|| {
                malformed_is(
                    &directory,
                    format_args!(
                        "has no \"{}\" file; set the username with \
                         `FileSource::builder(..).username(..)`",
                        c.username_field
                    ),
                )
            })?,
        };
        let modified = password.modified;
        let password = self.text(&shown(&c.password_field), password.bytes)?;
        let optional =
            |key: &str, content: Option<Content>| -> Result<Option<String>, SourceError> {
                match content {
                    None => Ok(None),
                    Some(content) => {
                        let mut text = secret::utf8(&origin(&shown(key)), content.bytes)?;
                        if c.strip_newline {
                            secret::strip_newline(&mut text);
                        }
                        Ok(Some(text).filter(|t| !t.trim().is_empty()))
                    }
                }
            };
        let port = match optional("port", port)? {
            Some(p) => Some(parse_port(&origin(&shown("port")), &p)?),
            None => None,
        };
        let mut details = SecretDetails::default();
        if let Some(host) = optional("host", host)? {
            details = details.with_host(host);
        }
        if let Some(port) = port {
            details = details.with_port(port);
        }
        if let Some(dbname) = optional("dbname", dbname)? {
            details = details.with_dbname(dbname);
        }
        let credential = Credential::new(username, password);
        Ok(finish(credential, details, fingerprint, target, modified))
    }

    /// One file: JSON or a plain password.
    fn read_file(&self) -> Result<Attempt, SourceError> {
        let c = &self.config;
        let parent = match c.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let target = data_target(&parent)?;
        let content = read_optional(&c.path, &c.path)?
            .ok_or_else(|| io_error(&c.path, io::Error::from(io::ErrorKind::NotFound)))?;
        if target.is_some() && data_target(&parent)? != target {
            return Ok(None);
        }
        let origin = origin(&c.path);
        let fingerprint = Fingerprint::of([Some(&content.bytes[..])]);
        let modified = content.modified;
        let text = secret::utf8(&origin, content.bytes)?;
        if text.trim().is_empty() {
            return Err(malformed_is(
                &origin,
                "is empty; a half-written file is never used",
            ));
        }
        let json = match c.layout {
            Layout::Json => true,
            Layout::PasswordFile => false,
            _ => looks_like_json(&text),
        };
        let (credential, details) = if json {
            parse_json(&origin, &text, c.username.as_deref())?
        } else {
            let username = c.username.clone().ok_or_else(|| {
                malformed_is(
                    &origin,
                    "holds a plain password, not JSON; set the username with \
                     `FileSource::builder(..).username(..)` to use it as a password",
                )
            })?;
            let password = self.text(&c.path, text.into_bytes())?;
            (
                Credential::new(username, password),
                SecretDetails::default(),
            )
        };
        Ok(Some(finish(
            credential,
            details,
            fingerprint,
            target.as_ref(),
            modified,
        )))
    }

    /// A username or password file's text: UTF-8, one trailing newline dropped, not empty.
    fn text(&self, path: &Path, bytes: Vec<u8>) -> Result<String, SourceError> {
        let origin = origin(path);
        let mut text = secret::utf8(&origin, bytes)?;
        if self.config.strip_newline {
            secret::strip_newline(&mut text);
        }
        if text.is_empty() {
            return Err(malformed_is(
                &origin,
                "is empty; a half-written file is never used",
            ));
        }
        Ok(text)
    }
}

fn origin(path: &Path) -> String {
    format!("file {}", path.display())
}

fn finish(
    credential: Credential,
    details: SecretDetails,
    fingerprint: Fingerprint,
    target: Option<&OsString>,
    modified: Option<SystemTime>,
) -> Read {
    let version = match target {
        Some(target) => Path::new(target)
            .file_name()
            .unwrap_or(target)
            .to_string_lossy()
            .into_owned(),
        None => fingerprint.version(),
    };
    let mut credential = credential.with_version(version);
    if let Some(modified) = modified {
        credential = credential.with_issued_at(modified);
    }
    Read {
        secret: DatabaseSecret::new(credential, details),
        fingerprint,
    }
}

/// Where `dir/..data` points, if it is a symlink.
fn data_target(dir: &Path) -> Result<Option<OsString>, SourceError> {
    let link = dir.join(DATA_LINK);
    match fs::read_link(&link) {
        Ok(target) => Ok(Some(target.into_os_string())),
        // Absent, or not a symlink (EINVAL): not an atomic-writer directory.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(io_error(&link, e)),
    }
}

/// Reads `path` (named `shown` in errors); `None` when it does not exist.
fn read_optional(path: &Path, shown: &Path) -> Result<Option<Content>, SourceError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(shown, e)),
    };
    let metadata = file.metadata().map_err(|e| io_error(shown, e))?;
    if metadata.is_dir() {
        return Err(malformed_is(&origin(shown), "is a directory, not a file"));
    }
    // A secret is small; a huge file is a mistake (or /dev/zero).
    const LIMIT: u64 = 1 << 20;
    let mut bytes = Vec::new();
    (&mut file)
        .take(LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(shown, e))?;
    if bytes.len() as u64 > LIMIT {
        return Err(malformed_is(&origin(shown), "is larger than 1 MiB"));
    }
    Ok(Some(Content {
        bytes,
        modified: metadata.modified().ok(),
    }))
}

#[async_trait]
impl CredentialSource for FileSource {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        self.fetch_secret()
            .await
            .map(|secret| secret.into_parts().0)
    }
}

impl fmt::Debug for FileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.inner.config;
        f.debug_struct("FileSource")
            .field("path", &c.path)
            .field("layout", &c.layout)
            .field("username", &c.username)
            .field("username_field", &c.username_field)
            .field("password_field", &c.password_field)
            .field("poll_interval", &c.poll_interval)
            .field("stats", &self.stats())
            .finish()
    }
}
