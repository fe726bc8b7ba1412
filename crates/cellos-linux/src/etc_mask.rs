//! The overlay layer that hides host secrets from a `rootfs: host` cell's `/etc`.
//!
//! The cell's `/etc` is a read-only overlay: `cell layer (hostname, hosts) : mask : host /etc`.
//! The mask holds overlayfs whiteouts (0:0 character devices) for every secret-bearing entry,
//! so those names do not exist in the cell at all (`stat` fails) while the rest of `/etc` stays
//! live. One overlay mount replaces ~140 per-entry binds, which measured at several
//! milliseconds per cell. The mask is built by the supervisor (whiteouts need `CAP_MKNOD` in the
//! initial namespace), once per distinct set of secret entries present on the host, and reused.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::LinuxError;

/// Entries of `/etc` (relative) that never reach a cell.
pub const HIDDEN_ETC_ENTRIES: &[&str] = &[
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "sudoers",
    "sudoers.d",
    "ssl/private",
    "security/opasswd",
    "krb5.keytab",
    "NetworkManager/system-connections",
    "ppp/chap-secrets",
    "ppp/pap-secrets",
    "wpa_supplicant",
    "docker/key.json",
    "cellos",
];

/// `/etc/ssh` entries whose name contains this are hidden (host keys, private and public).
const SSH_KEY_MARKER: &str = "key";

/// Secret entries present under `etc` right now, sorted.
pub fn hidden_entries(etc: &Path) -> Vec<String> {
    let mut found: Vec<String> = HIDDEN_ETC_ENTRIES
        .iter()
        .filter(|rel| std::fs::symlink_metadata(etc.join(rel)).is_ok())
        .map(|rel| rel.to_string())
        .collect();
    if let Ok(dir) = std::fs::read_dir(etc.join("ssh")) {
        for entry in dir.flatten() {
            if let Some(name) = entry.file_name().to_str() {
                if name.contains(SSH_KEY_MARKER) {
                    found.push(format!("ssh/{name}"));
                }
            }
        }
    }
    found.sort();
    found
}

/// The mask for the host's current `/etc`, under `<dir>/<fingerprint>`, built if missing.
pub fn ensure_mask(dir: &Path, etc: &Path) -> Result<PathBuf, LinuxError> {
    let entries = hidden_entries(etc);
    let mut hash = Sha256::new();
    for e in &entries {
        hash.update(e.as_bytes());
        hash.update([0]);
    }
    let final_dir = dir.join(&hex::encode(hash.finalize())[..16]);
    if final_dir.is_dir() {
        return Ok(final_dir);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| LinuxError::io(format!("create {}", dir.display()), e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(dir)
        .map_err(|e| LinuxError::io(format!("create staging dir in {}", dir.display()), e))?;
    for rel in &entries {
        let path = tmp.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| LinuxError::io(format!("create {}", parent.display()), e))?;
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .map_err(|e| {
            LinuxError::errno(
                format!(
                    "create overlay whiteout {} (needs CAP_MKNOD)",
                    path.display()
                ),
                e.raw_os_error(),
            )
        })?;
    }
    // Directories of the layer merge with /etc's, so they must not restrict traversal.
    for entry in walk_dirs(tmp.path()) {
        let _ =
            std::fs::set_permissions(&entry, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    }
    let staged = tmp.keep();
    match std::fs::rename(&staged, &final_dir) {
        Ok(()) => Ok(final_dir),
        // Another create built the same mask concurrently: use theirs.
        Err(_) if final_dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&staged);
            Ok(final_dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            Err(LinuxError::io(
                format!("install {}", final_dir.display()),
                e,
            ))
        }
    }
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = std::fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn mask_whiteouts_exactly_the_present_secret_entries() {
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(etc.path().join("shadow"), b"x").unwrap();
        std::fs::write(etc.path().join("passwd"), b"x").unwrap();
        std::fs::create_dir(etc.path().join("ssh")).unwrap();
        std::fs::write(etc.path().join("ssh/ssh_host_ed25519_key"), b"x").unwrap();
        std::fs::write(etc.path().join("ssh/ssh_config"), b"x").unwrap();
        let state = tempfile::tempdir().unwrap();
        let mask = ensure_mask(state.path(), etc.path()).unwrap();
        let wh = std::fs::symlink_metadata(mask.join("shadow")).unwrap();
        assert!(wh.file_type().is_char_device());
        let key = std::fs::symlink_metadata(mask.join("ssh/ssh_host_ed25519_key")).unwrap();
        assert!(key.file_type().is_char_device());
        assert!(std::fs::symlink_metadata(mask.join("ssh/ssh_config")).is_err());
        assert!(std::fs::symlink_metadata(mask.join("passwd")).is_err());
        assert!(std::fs::symlink_metadata(mask.join("sudoers")).is_err());
        // Same entries: same layer, reused.
        assert_eq!(ensure_mask(state.path(), etc.path()).unwrap(), mask);
    }
}
