//! The binaries the test kit runs beside PostgreSQL (PgBouncer, OpenBao, moto): finding them, and
//! stopping them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::Error;

/// How long a killed process may take to exit before a warning.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// An executable the kit runs: named by an environment variable, else found on `PATH`.
#[derive(Debug)]
pub(crate) struct Binary {
    /// Its file name on `PATH`: `"bao"`.
    pub(crate) file: &'static str,
    /// How the not-found message names it: `"bao (OpenBao)"`.
    pub(crate) label: &'static str,
    /// The environment variable naming the executable; it overrides the `PATH` search.
    pub(crate) env: &'static str,
    /// How to get it, quoted by every error that says it is missing.
    pub(crate) how_to: &'static str,
}

impl Binary {
    /// The executable: the file the environment variable names (an error if that is not an
    /// executable file), else the first on `PATH`; an error that says how to get it otherwise.
    pub(crate) fn discover(&self) -> Result<PathBuf, Error> {
        if let Some(file) = std::env::var_os(self.env).filter(|v| !v.is_empty()) {
            let file = PathBuf::from(file);
            return if is_executable(&file) {
                Ok(file)
            } else {
                Err(Error::missing_binaries(format!(
                    "{} not found at {}={} (not an executable file); {}",
                    self.file,
                    self.env,
                    file.display(),
                    self.how_to
                )))
            };
        }
        self.find_on_path(std::env::var_os("PATH"))
            .ok_or_else(|| self.not_found())
    }

    /// The first executable file of this name in the directories of `path` (a `PATH` value).
    pub(crate) fn find_on_path(&self, path: Option<OsString>) -> Option<PathBuf> {
        path.iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(self.file))
            .find(|file| is_executable(file))
    }

    /// The error when it is neither named nor on `PATH`.
    pub(crate) fn not_found(&self) -> Error {
        Error::missing_binaries(format!("{} not found on PATH; {}", self.label, self.how_to))
    }
}

/// Whether `path` is a file (or a link to one) with an execute bit.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Kills `child` unless it has exited already, and reaps it. Never panics; `name` is for the
/// warning when it does not exit.
pub(crate) fn kill_and_reap(mut child: Child, name: &str) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = child.kill();
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::warn!(pid = child.id(), "{name} did not exit after SIGKILL");
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOOL: Binary = Binary {
        file: "tool",
        label: "tool (the tool)",
        env: "CREDSWAP_TEST_TOOL_UNSET",
        how_to: "install it with `get tool`",
    };

    #[test]
    fn binaries_are_found_on_path() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        assert_eq!(TOOL.find_on_path(None), None);
        assert_eq!(TOOL.find_on_path(Some(bin.clone().into_os_string())), None);
        let file = bin.join("tool");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        assert_eq!(TOOL.find_on_path(Some(bin.clone().into_os_string())), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(TOOL.find_on_path(Some(bin.into_os_string())), Some(file));
    }

    #[test]
    fn missing_binary_message_names_it_and_says_how_to_get_it() {
        let e = TOOL.not_found();
        assert!(e.is_missing_binaries());
        assert_eq!(
            e.to_string(),
            "tool (the tool) not found on PATH; install it with `get tool`"
        );
    }
}
