//! How reading a file becomes a [`SourceError`], and the errors of building and watching.
//!
//! | what happened | kind |
//! |---|---|
//! | the path (or the directory's `..data`) does not exist, an I/O error, the files changed under every one of three reads | [`unavailable`](SourceError::unavailable): the provider keeps serving the last good credential and tries again (a Vault Agent sink that is not written yet is this) |
//! | permission denied | [`denied`](SourceError::denied) |
//! | an empty or half-written file, JSON that does not parse, a missing field or key file (a `username` file without a `password` file), a plain password without a configured username, text that is not UTF-8, a directory where a file was configured (or the reverse) | [`malformed`](SourceError::malformed) |
//!
//! Messages name the file (its path) and the field, never a value; a missing environment
//! variable is malformed and named.

use std::io;
use std::path::Path;

use credswap_core::SourceError;

/// Why watching a [`FileSource`](crate::FileSource) could not start.
///
/// A native watch that cannot be set up (no such directory yet, the inotify watch limit) is not
/// an error: the watcher re-reads every `poll_interval` and tries to set it up again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// Called outside a Tokio runtime: the watcher is a Tokio task.
    #[error("watching a file source needs a Tokio runtime (it spawns its watcher task)")]
    NoRuntime,
}

/// Classifies an I/O error on `path` (never content: an I/O error holds none).
pub(crate) fn io_error(path: &Path, err: io::Error) -> SourceError {
    let path = path.display();
    match err.kind() {
        io::ErrorKind::NotFound => {
            SourceError::unavailable(format!("{path} does not exist (not written yet?)"))
        }
        io::ErrorKind::PermissionDenied => {
            SourceError::denied(format!("{path}: permission denied"))
        }
        kind => SourceError::unavailable(format!("cannot read {path}: {kind}")),
    }
    .with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified_and_name_the_path() {
        let p = Path::new("/run/secrets/db/password");
        let e = io_error(p, io::Error::from(io::ErrorKind::NotFound));
        assert!(e.is_unavailable() && e.message().contains("/run/secrets/db/password"));
        let e = io_error(p, io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(e.is_denied(), "{e}");
        let e = io_error(p, io::Error::from(io::ErrorKind::Interrupted));
        assert!(e.is_unavailable(), "{e}");
        assert!(WatchError::NoRuntime.to_string().contains("Tokio"));
    }
}
