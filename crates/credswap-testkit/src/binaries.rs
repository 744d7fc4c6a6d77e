//! Finding the PostgreSQL server binaries (`initdb`, `postgres`, `pg_ctl`) and `pgbouncer`.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// Environment variable naming a directory that holds `initdb` and `postgres`; it overrides the
/// search.
pub(crate) const BINDIR_ENV: &str = "CREDSWAP_PG_BINDIR";

/// Where Debian and Ubuntu install one directory per major version.
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";

const HOW_TO_GET_THEM: &str = "install them with `apt-get install postgresql` (Debian/Ubuntu), \
     point CREDSWAP_PG_BINDIR at the directory that holds them, \
     or set CREDSWAP_TEST_ADMIN_URL to use an existing server";

/// The server binaries of one PostgreSQL installation.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) initdb: PathBuf,
    pub(crate) postgres: PathBuf,
    /// Used to stop the server gracefully; without it the server is killed.
    pub(crate) pg_ctl: Option<PathBuf>,
}

impl Binaries {
    /// The binaries in `dir`, if it holds at least `initdb` and `postgres`.
    fn in_dir(dir: &Path) -> Option<Self> {
        let initdb = dir.join("initdb");
        let postgres = dir.join("postgres");
        if !is_executable(&initdb) || !is_executable(&postgres) {
            return None;
        }
        let pg_ctl = Some(dir.join("pg_ctl")).filter(|p| is_executable(p));
        Some(Self {
            initdb,
            postgres,
            pg_ctl,
        })
    }
}

/// Finds the binaries: `CREDSWAP_PG_BINDIR`; else `initdb` on `PATH`; else `pg_config --bindir`;
/// else the highest `/usr/lib/postgresql/*/bin`.
pub(crate) fn discover() -> Result<Binaries, Error> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return Binaries::in_dir(&dir).ok_or_else(|| {
            Error::missing_binaries(format!(
                "PostgreSQL server binaries (initdb, postgres) not found in {BINDIR_ENV}={}; \
                 {HOW_TO_GET_THEM}",
                dir.display()
            ))
        });
    }
    find_on_path(std::env::var_os("PATH"))
        .or_else(find_via_pg_config)
        .or_else(|| find_versioned(Path::new(VERSIONED_ROOT)))
        .ok_or_else(not_found)
}

fn not_found() -> Error {
    Error::missing_binaries(format!(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH, via pg_config --bindir, \
         or under {VERSIONED_ROOT}/*/bin; {HOW_TO_GET_THEM}"
    ))
}

/// `initdb` on `path`; the directory its symlink resolves to is preferred, since that is where
/// the rest of the installation lives.
fn find_on_path(path: Option<OsString>) -> Option<Binaries> {
    let path = path?;
    std::env::split_paths(&path).find_map(|dir| {
        let initdb = dir.join("initdb");
        if !is_executable(&initdb) {
            return None;
        }
        let resolved = std::fs::canonicalize(&initdb)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        resolved
            .and_then(|d| Binaries::in_dir(&d))
            .or_else(|| Binaries::in_dir(&dir))
    })
}

fn find_via_pg_config() -> Option<Binaries> {
    let output = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    Binaries::in_dir(Path::new(dir.trim()))
}

/// The highest `<root>/<version>/bin` that holds the binaries (`16` beats `9.6`).
fn find_versioned(root: &Path) -> Option<Binaries> {
    let mut versions: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let key = name
                .split('.')
                .map(str::parse::<u64>)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            Some((key, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions
        .iter()
        .rev()
        .find_map(|(_, bin)| Binaries::in_dir(bin))
}

/// Environment variable naming the `pgbouncer` executable; it overrides the search.
pub(crate) const PGBOUNCER_ENV: &str = "CREDSWAP_PGBOUNCER";

/// Where the Debian package puts it (`/usr/sbin` is often not on a user's `PATH`).
const PGBOUNCER_DEFAULT: &str = "/usr/sbin/pgbouncer";

const HOW_TO_GET_PGBOUNCER: &str = "install it with `apt-get install pgbouncer` (Debian/Ubuntu), \
     or point CREDSWAP_PGBOUNCER at the executable";

/// Finds `pgbouncer`: `CREDSWAP_PGBOUNCER`; else `pgbouncer` on `PATH`; else
/// `/usr/sbin/pgbouncer`.
pub(crate) fn discover_pgbouncer() -> Result<PathBuf, Error> {
    if let Some(file) = std::env::var_os(PGBOUNCER_ENV).filter(|v| !v.is_empty()) {
        let file = PathBuf::from(file);
        return if is_executable(&file) {
            Ok(file)
        } else {
            Err(Error::missing_binaries(format!(
                "pgbouncer not found at {PGBOUNCER_ENV}={} (not an executable file); \
                 {HOW_TO_GET_PGBOUNCER}",
                file.display()
            )))
        };
    }
    find_pgbouncer(std::env::var_os("PATH"), Path::new(PGBOUNCER_DEFAULT))
        .ok_or_else(pgbouncer_not_found)
}

fn find_pgbouncer(path: Option<OsString>, default: &Path) -> Option<PathBuf> {
    path.iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("pgbouncer"))
        .chain(std::iter::once(default.to_path_buf()))
        .find(|file| is_executable(file))
}

fn pgbouncer_not_found() -> Error {
    Error::missing_binaries(format!(
        "pgbouncer not found on PATH or at {PGBOUNCER_DEFAULT}; {HOW_TO_GET_PGBOUNCER}"
    ))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fake_install(dir: &Path, with_postgres: bool) {
        fs::create_dir_all(dir).unwrap();
        let mut names = vec!["initdb", "pg_ctl"];
        if with_postgres {
            names.push("postgres");
        }
        for name in names {
            let file = dir.join(name);
            fs::write(&file, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn highest_version_wins() {
        let root = tempfile::tempdir().unwrap();
        fake_install(&root.path().join("9.6/bin"), true);
        fake_install(&root.path().join("15/bin"), true);
        fake_install(&root.path().join("16/bin"), false); // incomplete: skipped
        fs::create_dir_all(root.path().join("not-a-version/bin")).unwrap();
        let found = find_versioned(root.path()).unwrap();
        assert_eq!(found.initdb, root.path().join("15/bin/initdb"));
        assert_eq!(found.pg_ctl, Some(root.path().join("15/bin/pg_ctl")));
    }

    #[test]
    fn path_search_follows_symlinks_to_the_installation() {
        let root = tempfile::tempdir().unwrap();
        let install = root.path().join("lib/pg/bin");
        fake_install(&install, true);
        let path_dir = root.path().join("bin");
        fs::create_dir_all(&path_dir).unwrap();
        std::os::unix::fs::symlink(install.join("initdb"), path_dir.join("initdb")).unwrap();
        let empty = root.path().join("empty");
        fs::create_dir_all(&empty).unwrap();

        let path = std::env::join_paths([&empty, &path_dir]).unwrap();
        let found = find_on_path(Some(path)).unwrap();
        let install = fs::canonicalize(install).unwrap();
        assert_eq!(found.postgres, install.join("postgres"));

        assert!(find_on_path(Some(empty.into_os_string())).is_none());
        assert!(find_on_path(None).is_none());
    }

    #[test]
    fn pgbouncer_is_found_on_path_before_the_default() {
        let root = tempfile::tempdir().unwrap();
        let on_path = root.path().join("bin");
        let default = root.path().join("sbin/pgbouncer");
        fs::create_dir_all(&on_path).unwrap();
        fs::create_dir_all(default.parent().unwrap()).unwrap();
        for file in [on_path.join("pgbouncer"), default.clone()] {
            fs::write(&file, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = Some(on_path.clone().into_os_string());
        assert_eq!(
            find_pgbouncer(path, &default),
            Some(on_path.join("pgbouncer"))
        );
        assert_eq!(find_pgbouncer(None, &default), Some(default.clone()));
        let missing = root.path().join("nowhere/pgbouncer");
        assert_eq!(find_pgbouncer(None, &missing), None);
    }

    #[test]
    fn missing_pgbouncer_message_says_how_to_get_it() {
        let e = pgbouncer_not_found();
        assert!(e.is_missing_binaries());
        let text = e.to_string();
        for needle in [
            "pgbouncer",
            "PATH",
            "/usr/sbin/pgbouncer",
            "apt-get install pgbouncer",
            "CREDSWAP_PGBOUNCER",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
    }

    #[test]
    fn missing_binaries_message_says_what_and_how() {
        let e = not_found();
        assert!(e.is_missing_binaries());
        let text = e.to_string();
        for needle in [
            "initdb",
            "postgres",
            "PATH",
            "pg_config --bindir",
            "/usr/lib/postgresql/*/bin",
            "apt-get install postgresql",
            "CREDSWAP_TEST_ADMIN_URL",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
    }
}
