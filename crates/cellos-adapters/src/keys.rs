//! Host signing keys: creation, loading, permissions.
//!
//! Layout under `<home>/keys/` (directory mode 0700):
//! * `ed25519.key` — the host's private Ed25519 seed, hex, mode 0600;
//! * `trusted/<kid>.pub` — public keys `verify` trusts (hex), one file per key; the host's own
//!   public key is written here when it is generated, and keys of other hosts can be dropped
//!   in, so a log can be verified offline with only public keys;
//! * `hmac/<name>.key` — optional HMAC-SHA256 keys (hex, mode 0600), trusted by name.
//!
//! Files are published atomically (written to a temporary name, then hard-linked into place),
//! so two processes creating the key at first use end up sharing one key, never a torn file.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cellos_core::integrity::{ed25519_kid, note_key_material_held, Keyring, Signer};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

const KEYS_DIR: &str = "keys";
const TRUSTED_DIR: &str = "trusted";
const HMAC_DIR: &str = "hmac";
const ED25519_KEY: &str = "ed25519.key";
const PUBLIC_SUFFIX: &str = ".pub";
const SECRET_SUFFIX: &str = ".key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("key file {path} is invalid: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("key file {path} already exists; remove it first to replace the key")]
    Exists { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The key directory of one CellOS home.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    /// Key store of the CellOS home `home` (keys live in `<home>/keys`).
    pub fn new(home: &Path) -> Self {
        Self {
            dir: home.join(KEYS_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the host's private Ed25519 key.
    pub fn ed25519_path(&self) -> PathBuf {
        self.dir.join(ED25519_KEY)
    }

    /// Directory of trusted public keys.
    pub fn trusted_dir(&self) -> PathBuf {
        self.dir.join(TRUSTED_DIR)
    }

    fn hmac_path(&self, name: &str) -> PathBuf {
        self.dir
            .join(HMAC_DIR)
            .join(format!("{name}{SECRET_SUFFIX}"))
    }

    fn ensure_dir(path: &Path, mode: u32) -> Result<(), KeyError> {
        DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(io_err(path))
    }

    /// Generate a new host Ed25519 key (refusing to replace an existing one) and trust its
    /// public key. Returns the public key.
    pub fn generate(&self) -> Result<VerifyingKey, KeyError> {
        note_key_material_held();
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(seed.as_mut());
        let key = SigningKey::from_bytes(&seed);
        Self::ensure_dir(&self.dir, 0o700)?;
        let path = self.ed25519_path();
        publish(&path, hex::encode(seed.as_ref()).as_bytes(), 0o600)?;
        let public = key.verifying_key();
        self.trust(&public)?;
        Ok(public)
    }

    /// Where the public key `key` is trusted.
    fn trusted_path(&self, key: &VerifyingKey) -> (String, PathBuf) {
        let kid = ed25519_kid(key);
        let path = self
            .trusted_dir()
            .join(format!("{}{PUBLIC_SUFFIX}", kid.replace(':', "-")));
        (kid, path)
    }

    /// Add `key` to the trusted public keys; returns its key id.
    pub fn trust(&self, key: &VerifyingKey) -> Result<String, KeyError> {
        Self::ensure_dir(&self.dir, 0o700)?;
        Self::ensure_dir(&self.trusted_dir(), 0o755)?;
        let (kid, path) = self.trusted_path(key);
        match publish(&path, hex::encode(key.as_bytes()).as_bytes(), 0o644) {
            Ok(()) | Err(KeyError::Exists { .. }) => Ok(kid),
            Err(e) => Err(e),
        }
    }

    /// Load the host's Ed25519 signing key.
    pub fn load_signer(&self) -> Result<Signer, KeyError> {
        let path = self.ed25519_path();
        let seed = read_secret_hex(&path)?;
        let seed: [u8; 32] = seed.as_slice().try_into().map_err(|_| KeyError::Invalid {
            path: path.clone(),
            reason: format!("expected 32 bytes (64 hex digits), found {}", seed.len()),
        })?;
        Ok(Signer::ed25519(SigningKey::from_bytes(&seed)))
    }

    /// Load the host key, creating it on first use. The common case (the key exists and is
    /// trusted) only reads: it runs on every `cellos run`, so it must not write or fsync.
    pub fn load_or_create_signer(&self) -> Result<Signer, KeyError> {
        let signer = match self.load_signer() {
            Ok(signer) => signer,
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                match self.generate() {
                    Ok(_) | Err(KeyError::Exists { .. }) => {}
                    Err(e) => return Err(e),
                }
                self.load_signer()?
            }
            Err(e) => return Err(e),
        };
        // A writer that died between publishing the private and the public key left the
        // public one out; trusting is idempotent, so make sure here.
        if let Some(public) = signer.verifying_key() {
            if !self.trusted_path(&public).1.exists() {
                self.trust(&public)?;
            }
        }
        Ok(signer)
    }

    /// Make sure the host's Ed25519 key exists (creating it on first use) and is well formed,
    /// without decoding it: the key is then loaded only where it signs
    /// ([`KeyStore::load_or_create_signer`]), and a process that only checked it has held no
    /// key material ([`cellos_core::integrity::key_material_held`]). The check reads the file
    /// into a zeroised buffer of fixed size, so no copy of its text outlives it.
    pub fn check_signer(&self) -> Result<(), KeyError> {
        use std::io::Read;
        let path = self.ed25519_path();
        let mut file = match open_secret(&path) {
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return match self.generate() {
                    Ok(_) | Err(KeyError::Exists { .. }) => Ok(()),
                    Err(e) => Err(e),
                };
            }
            other => other?,
        };
        // 64 hex digits, a newline and room to notice anything longer.
        let mut buf = Zeroizing::new([0u8; 80]);
        let mut len = 0;
        while len < buf.len() {
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        let text = buf[..len].trim_ascii();
        if text.len() != 64 || !text.iter().all(u8::is_ascii_hexdigit) {
            return Err(KeyError::Invalid {
                path,
                reason: format!(
                    "expected 32 bytes (64 hex digits), found {} characters",
                    text.len()
                ),
            });
        }
        Ok(())
    }

    /// Create an HMAC key named `name` (32 random bytes).
    pub fn generate_hmac(&self, name: &str) -> Result<(), KeyError> {
        note_key_material_held();
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        Self::ensure_dir(&self.dir, 0o700)?;
        Self::ensure_dir(&self.dir.join(HMAC_DIR), 0o700)?;
        publish(
            &self.hmac_path(name),
            hex::encode(key.as_ref()).as_bytes(),
            0o600,
        )
    }

    /// Load the HMAC key `name` as a signer.
    pub fn load_hmac_signer(&self, name: &str) -> Result<Signer, KeyError> {
        let path = self.hmac_path(name);
        let key = read_secret_hex(&path)?;
        Signer::hmac(name, key.to_vec()).map_err(|e| KeyError::Invalid {
            path,
            reason: e.to_string(),
        })
    }

    /// Every trusted key: the public keys in `trusted/` and the HMAC keys in `hmac/`.
    pub fn keyring(&self) -> Result<Keyring, KeyError> {
        let mut keyring = Keyring::new();
        for path in files_with_suffix(&self.trusted_dir(), PUBLIC_SUFFIX)? {
            keyring.add_ed25519(read_public_key(&path)?);
        }
        for path in files_with_suffix(&self.dir.join(HMAC_DIR), SECRET_SUFFIX)? {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let key = read_secret_hex(&path)?;
            keyring
                .add_hmac(&name, key.to_vec())
                .map_err(|e| KeyError::Invalid {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(keyring)
    }
}

/// Read an Ed25519 public key file (64 hex digits).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let invalid = |reason: String| KeyError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let bytes = hex::decode(text.trim()).map_err(|e| invalid(format!("not hex: {e}")))?;
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| invalid(format!("expected 32 bytes, found {}", bytes.len())))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| invalid(e.to_string()))
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>, KeyError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        if path.to_str().is_some_and(|p| p.ends_with(suffix)) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Read a private hex key file, refusing one that group or others can read.
fn read_secret_hex(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    note_key_material_held();
    let file = open_secret(path)?;
    let text = Zeroizing::new(io::read_to_string(file).map_err(io_err(path))?);
    hex::decode(text.trim())
        .map(Zeroizing::new)
        .map_err(|e| KeyError::Invalid {
            path: path.to_owned(),
            reason: format!("not hex: {e}"),
        })
}

/// Open a private key file, refusing one that group or others can read.
fn open_secret(path: &Path) -> Result<File, KeyError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mode = file.metadata().map_err(io_err(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(file)
}

/// Write `contents` to `path` with `mode`, atomically and without replacing an existing file.
fn publish(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let tmp = path.with_extension(format!("tmp.{}", uuid::Uuid::new_v4().simple()));
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open is reduced by the umask; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.write_all(b"\n")?;
        file.sync_all()
    };
    let result = write().and_then(|()| std::fs::hard_link(&tmp, path));
    // The temporary name is only a staging step; losing it is harmless.
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            if let Some(parent) = path.parent() {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(io_err(parent))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(KeyError::Exists {
            path: path.to_owned(),
        }),
        Err(e) => Err(io_err(path)(e)),
    }
}
