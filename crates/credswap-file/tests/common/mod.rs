//! What the integration tests share: a Kubernetes-style secret volume and an atomic writer.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory laid out as the kubelet's atomic writer lays out a secret volume:
///
/// ```text
/// ..2026_11_26_10_00_00.000000001/{username,password}
/// ..data -> ..2026_11_26_10_00_00.000000001
/// username -> ..data/username
/// password -> ..data/password
/// ```
///
/// [`swap`](Self::swap) publishes a new version the way the kubelet does: a new timestamped
/// directory, a new symlink `..data_tmp` renamed over `..data` (one atomic step), then the old
/// directory removed.
pub struct K8sVolume {
    pub dir: PathBuf,
    current: Option<String>,
    serial: AtomicU64,
}

impl K8sVolume {
    /// A volume in `dir` (which must exist) holding these keys.
    pub fn create(dir: &Path, keys: &[(&str, &str)]) -> K8sVolume {
        let mut volume = K8sVolume {
            dir: dir.to_path_buf(),
            current: None,
            serial: AtomicU64::new(0),
        };
        volume.swap(keys);
        for (key, _) in keys {
            symlink(format!("..data/{key}"), dir.join(key)).unwrap();
        }
        volume
    }

    /// Publishes a new version; returns its directory name (the credential's version).
    pub fn swap(&mut self, keys: &[(&str, &str)]) -> String {
        let n = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("..2026_11_26_10_00_00.{n:09}");
        let data = self.dir.join(&name);
        fs::create_dir(&data).unwrap();
        for (key, value) in keys {
            fs::write(data.join(key), value).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        symlink(&name, &tmp).unwrap();
        fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(old) = self.current.replace(name.clone()) {
            fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
        name
    }
}

/// Writes `contents` to `path` as Vault Agent and most tools do: a temporary file in the same
/// directory, renamed over the old one.
pub fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp-write");
    fs::write(&tmp, contents).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// RDS/Aurora-style JSON.
pub fn rds_json(username: &str, password: &str) -> String {
    format!(
        r#"{{"engine":"postgres","host":"db.internal","port":5432,"dbname":"orders","username":"{username}","password":"{password}"}}"#
    )
}
