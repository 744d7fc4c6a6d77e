//! The embedded cluster's processes and files: temp dir, `initdb`, the `postgres` child, and the
//! shutdown that removes it all.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::Error;
use crate::binaries::{self, Binaries};

/// The superuser `initdb` creates.
pub(crate) const ADMIN_USER: &str = "postgres";
/// The database the admin connects to.
pub(crate) const ADMIN_DATABASE: &str = "postgres";
/// Where the embedded server listens.
pub(crate) const LOOPBACK: &str = "127.0.0.1";

/// How long a graceful stop may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of the server log quoted in a startup error.
const LOG_TAIL_LINES: usize = 25;

/// The unprivileged account the server runs as when this process is root
/// (`initdb` and `postgres` refuse to run as root, and so does `pgbouncer`).
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

impl RunAs {
    /// `None` unless the effective uid is 0; then `postgres`, else `nobody`, from `/etc/passwd`.
    pub(crate) fn detect() -> Result<Option<Self>, Error> {
        if effective_uid() != Some(0) {
            return Ok(None);
        }
        let passwd = std::fs::read_to_string("/etc/passwd")
            .map_err(|e| Error::startup_io("running as root, and reading /etc/passwd failed", e))?;
        ["postgres", "nobody"]
            .iter()
            .find_map(|name| lookup_user(&passwd, name))
            .map(Some)
            .ok_or_else(|| {
                Error::startup(
                    "running as root, and neither a `postgres` nor a `nobody` user exists in \
                     /etc/passwd to run initdb and postgres as (they refuse to run as root)",
                )
            })
    }

    /// The account's name, for messages.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Makes `path` owned by this account, so that a process running as it can read (or, for a
    /// directory, write) it.
    pub(crate) fn chown(&self, path: &Path) -> Result<(), Error> {
        chown(path, Some(self.uid), Some(self.gid)).map_err(|e| {
            Error::startup_io(
                format!("handing {} to user {}", path.display(), self.name),
                e,
            )
        })
    }

    /// Makes `command` run as this account.
    pub(crate) fn apply(&self, command: &mut Command) {
        command.uid(self.uid).gid(self.gid);
    }
}

/// The effective uid, read without `unsafe` from `/proc/self/status` (or the owner of
/// `/proc/self`). `None` where there is no `/proc`.
fn effective_uid() -> Option<u32> {
    let from_status = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| parse_effective_uid(&status));
    from_status.or_else(|| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").ok().map(|m| m.uid())
    })
}

/// The second field of the `Uid:` line (real, effective, saved, filesystem).
fn parse_effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
}

fn lookup_user(passwd: &str, name: &str) -> Option<RunAs> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(RunAs {
            name: name.to_owned(),
            uid,
            gid,
        })
    })
}

/// An initialised data directory and, once started, its `postgres` child.
///
/// Dropping it stops the server and removes the directory.
pub(crate) struct Cluster {
    /// `None` only after the directory has been removed.
    dir: Option<TempDir>,
    data_dir: PathBuf,
    log_path: PathBuf,
    binaries: Binaries,
    run_as: Option<RunAs>,
    child: Option<Child>,
    /// The server's `max_connections` ([`DEFAULT_MAX_CONNECTIONS`] unless set).
    pub(crate) max_connections: u32,
}

/// The `max_connections` of a cluster started without one.
pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 300;

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("data_dir", &self.data_dir)
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("run_as", &self.run_as.as_ref().map(|r| &r.name))
            .finish()
    }
}

/// Why the server did not become ready.
pub(crate) enum NotReady {
    /// The child exited (for instance, it lost a race for its port).
    Exited(ExitStatus),
    /// Anything else; already a complete error.
    Failed(Error),
}

impl Cluster {
    /// Creates the temp dir and runs `initdb` with `admin_password` for the `postgres` superuser.
    /// Blocking.
    pub(crate) fn init(admin_password: &str) -> Result<Self, Error> {
        let binaries = binaries::discover()?;
        let run_as = RunAs::detect()?;
        // Under /tmp: the unix socket lives in this directory and its path must stay short.
        let base = if Path::new("/tmp").is_dir() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("credswap-pg-")
            .tempdir_in(&base)
            .map_err(|e| Error::startup_io("creating the cluster's temp dir", e))?;
        let mut cluster = Self {
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("postgres.log"),
            dir: Some(dir),
            binaries,
            run_as,
            child: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        };
        cluster.run_initdb(admin_password)?;
        Ok(cluster)
    }

    fn dir(&self) -> &Path {
        // `dir` is only taken in `shutdown`, which runs last.
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), TempDir::path)
    }

    fn chown(&self, path: &Path) -> Result<(), Error> {
        match &self.run_as {
            Some(run_as) => run_as.chown(path),
            None => Ok(()),
        }
    }

    /// A command that runs as the unprivileged user when we are root.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(self.dir()).stdin(Stdio::null());
        if let Some(run_as) = &self.run_as {
            run_as.apply(&mut command);
        }
        command
    }

    fn run_initdb(&mut self, admin_password: &str) -> Result<(), Error> {
        let dir = self.dir().to_path_buf();
        self.chown(&dir)?;
        let pwfile = dir.join("pwfile");
        write_private(&pwfile, admin_password)
            .map_err(|e| Error::startup_io("writing initdb's password file", e))?;
        self.chown(&pwfile)?;

        let mut pwfile_arg = std::ffi::OsString::from("--pwfile=");
        pwfile_arg.push(&pwfile);
        let output = self
            .command(&self.binaries.initdb)
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", ADMIN_USER])
            .args(["--auth-host=scram-sha-256", "--auth-local=scram-sha-256"])
            .arg(pwfile_arg)
            .args(["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
            .output();
        let removed = std::fs::remove_file(&pwfile);
        let output = output.map_err(|e| {
            Error::startup_io(format!("running {}", self.binaries.initdb.display()), e)
        })?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stdout));
            return Err(Error::startup(format!(
                "{} failed ({}):\n{}",
                self.binaries.initdb.display(),
                output.status,
                tail(&text, LOG_TAIL_LINES)
            )));
        }
        removed.map_err(|e| Error::startup_io("removing initdb's password file", e))
    }

    /// Turns TLS on before the first start: writes the server's certificate (0644) and key (0600,
    /// owned by the server's user, as PostgreSQL demands) into the data directory and the CA
    /// certificate beside it (returned: for clients), appends `ssl = on` and the file names to
    /// `postgresql.conf`, and replaces `pg_hba.conf`: TCP logins need TLS (`hostssl`,
    /// scram-sha-256; `hostnossl ... reject`), except the admin user's, which the test kit's own
    /// helpers make without TLS. Blocking.
    pub(crate) fn enable_tls(
        &self,
        server_cert_pem: &str,
        server_key_pem: &str,
        ca_cert_pem: &str,
    ) -> Result<PathBuf, Error> {
        let cert = self.data_dir.join(TLS_CERT_FILE);
        let key = self.data_dir.join(TLS_KEY_FILE);
        write_file(&cert, server_cert_pem, 0o644)
            .map_err(|e| Error::startup_io("writing the server certificate", e))?;
        self.chown(&cert)?;
        write_private(&key, server_key_pem.trim_end())
            .map_err(|e| Error::startup_io("writing the server key", e))?;
        self.chown(&key)?;
        let ca = self.dir().join(TLS_CA_FILE);
        write_file(&ca, ca_cert_pem, 0o644)
            .map_err(|e| Error::startup_io("writing the CA certificate", e))?;

        let mut conf = OpenOptions::new()
            .append(true)
            .open(self.data_dir.join("postgresql.conf"))
            .map_err(|e| Error::startup_io("opening postgresql.conf", e))?;
        writeln!(
            conf,
            "\n# credswap-testkit: TLS\nssl = on\nssl_cert_file = '{TLS_CERT_FILE}'\n\
             ssl_key_file = '{TLS_KEY_FILE}'"
        )
        .map_err(|e| Error::startup_io("writing postgresql.conf", e))?;

        // The file keeps its owner and mode: only its contents change.
        let hba = format!(
            "# credswap-testkit: TLS cluster\n\
             local all all scram-sha-256\n\
             hostnossl all {ADMIN_USER} {LOOPBACK}/32 scram-sha-256\n\
             hostnossl all all 0.0.0.0/0 reject\n\
             hostnossl all all ::/0 reject\n\
             hostssl all all {LOOPBACK}/32 scram-sha-256\n\
             hostssl all all ::1/128 scram-sha-256\n"
        );
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.data_dir.join("pg_hba.conf"))
            .and_then(|mut file| file.write_all(hba.as_bytes()))
            .map_err(|e| Error::startup_io("writing pg_hba.conf", e))?;
        Ok(ca)
    }

    /// Spawns `postgres` on `port`, logging to the cluster's log file.
    pub(crate) fn spawn(&mut self, port: u16) -> Result<(), Error> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| Error::startup_io("opening the server log", e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::startup_io("opening the server log", e))?;
        let mut socket_dir = std::ffi::OsString::from("unix_socket_directories=");
        socket_dir.push(self.dir());
        let child = self
            .command(&self.binaries.postgres)
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", &format!("listen_addresses={LOOPBACK}")])
            .arg("-c")
            .arg(socket_dir)
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", &format!("max_connections={}", self.max_connections)])
            .args(["-c", "password_encryption=scram-sha-256"])
            // Every login with its time (the pacing cases count them per second).
            .args(["-c", "log_connections=on"])
            .args(["-c", "log_timezone=UTC"])
            .args(["-c", "log_line_prefix=%m [%p] "])
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| {
                Error::startup_io(format!("starting {}", self.binaries.postgres.display()), e)
            })?;
        tracing::debug!(pid = child.id(), port, dir = %self.dir().display(), "postgres started");
        self.child = Some(child);
        Ok(())
    }

    /// Stops the server (a fast shutdown: every session ends), waits `down` with nothing
    /// listening, and starts it again on `port`.
    pub(crate) fn restart(&mut self, port: u16, down: Duration) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            self.stop(&mut child);
        }
        std::thread::sleep(down);
        self.spawn(port)
    }

    /// Whether the child has exited; reaps it if so.
    pub(crate) fn exited(&mut self) -> Result<Option<ExitStatus>, Error> {
        let Some(child) = self.child.as_mut() else {
            return Err(Error::startup("the server was never started"));
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Error::startup_io("checking on the server process", e)),
        }
    }

    /// Lines of the server log that record a refused password of `role`.
    pub(crate) fn refused_logins(&self, role: &str) -> usize {
        let needle = format!("password authentication failed for user \"{role}\"");
        std::fs::read_to_string(&self.log_path)
            .map(|log| log.lines().filter(|line| line.contains(&needle)).count())
            .unwrap_or(0)
    }

    /// Lines of the server log that record a refused login of `role` with an expired password
    /// (`VALID UNTIL` passed).
    pub(crate) fn expired_logins(&self, role: &str) -> usize {
        let needle = format!("User \"{role}\" has an expired password");
        std::fs::read_to_string(&self.log_path)
            .map(|log| log.lines().filter(|line| line.contains(&needle)).count())
            .unwrap_or(0)
    }

    /// When the server authorized each login of `role`, from the log (`log_connections`).
    pub(crate) fn logins(&self, role: &str) -> Vec<std::time::SystemTime> {
        let needle = format!("connection authorized: user={role} ");
        std::fs::read_to_string(&self.log_path)
            .map(|log| {
                log.lines()
                    .filter(|line| line.contains(&needle))
                    .filter_map(crate::clock::parse_log_time)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// When the server authorized each login of a role `wanted` accepts, from the log
    /// (`log_connections`), read once for all of them.
    pub(crate) fn logins_where(&self, wanted: &dyn Fn(&str) -> bool) -> Vec<std::time::SystemTime> {
        std::fs::read_to_string(&self.log_path)
            .map(|log| {
                log.lines()
                    .filter(|line| login_role(line).is_some_and(wanted))
                    .filter_map(crate::clock::parse_log_time)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Lines of the server log that record a refused login of a role `wanted` accepts.
    pub(crate) fn refused_logins_where(&self, wanted: &dyn Fn(&str) -> bool) -> usize {
        std::fs::read_to_string(&self.log_path)
            .map(|log| {
                log.lines()
                    .filter(|line| refused_role(line).is_some_and(wanted))
                    .count()
            })
            .unwrap_or(0)
    }

    /// The last lines of the server log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        match std::fs::read(&self.log_path) {
            Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), LOG_TAIL_LINES),
            Err(e) => format!("(server log {} unreadable: {e})", self.log_path.display()),
        }
    }

    /// Stops the server (`pg_ctl stop -m fast` as the server's user, else kill), reaps it and
    /// removes the directory. Never panics; problems are logged.
    fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.stop(&mut child);
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                tracing::warn!(dir = %path.display(), error = %e, "removing the cluster's temp dir failed");
            }
        }
    }

    fn stop(&self, child: &mut Child) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let stopped_gracefully = self.binaries.pg_ctl.as_ref().is_some_and(|pg_ctl| {
            self.command(pg_ctl)
                .arg("stop")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "fast", "-w", "-t", "10", "-s"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !stopped_gracefully {
            tracing::debug!(pid = child.id(), "pg_ctl stop failed; killing the server");
            let _ = child.kill();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) | Err(_) => break,
            }
        }
        tracing::warn!(
            pid = child.id(),
            "the server did not stop in time; killing it"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> Result<u16, Error> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| Error::startup_io("finding a free loopback port", e))
}

/// The server certificate's file name in the data directory of a TLS cluster.
const TLS_CERT_FILE: &str = "server.crt";
/// The server key's file name in the data directory of a TLS cluster.
const TLS_KEY_FILE: &str = "server.key";
/// The CA certificate's file name in a TLS cluster's temp dir (beside the data directory).
const TLS_CA_FILE: &str = "ca.crt";

/// Creates `path` (it must not exist) with `mode` and `contents`.
fn write_file(path: &Path, contents: &str, mode: u32) -> io::Result<()> {
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Creates `path` (it must not exist) with mode 0600 and `contents` plus a newline.
pub(crate) fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{contents}")?;
    file.sync_all()
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The role of a log line that records an authorized login (`log_connections`).
fn login_role(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("connection authorized: user=")?;
    rest.split_once(' ').map(|(role, _)| role)
}

/// The role of a log line that records a login refused for its password.
fn refused_role(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("password authentication failed for user \"")?;
    rest.split_once('"').map(|(role, _)| role)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_of_a_login_line_is_read_whole() {
        let login = "2026-12-07 14:13:30.410 UTC [42] LOG:  connection authorized: \
                     user=v-token-fl-fd_ztdl8-awau-1796652796 database=credswap \
                     application_name=x SSL enabled";
        assert_eq!(
            login_role(login),
            Some("v-token-fl-fd_ztdl8-awau-1796652796")
        );
        let refused = "2026-12-07 14:13:30.410 UTC [43] FATAL:  password authentication \
                       failed for user \"alt_a\"";
        assert_eq!(refused_role(refused), Some("alt_a"));
        assert_eq!(login_role(refused), None);
        assert_eq!(refused_role(login), None);
        assert_eq!(
            login_role("LOG:  connection received: host=127.0.0.1"),
            None
        );
    }

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\tcargo\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn users_are_looked_up_by_exact_name() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgresx:x:7:7::/:/bin/false\n\
                      postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        let user = lookup_user(passwd, "postgres").unwrap();
        assert_eq!((user.uid, user.gid), (101, 104));
        assert!(lookup_user(passwd, "nobody").is_none());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }
}
