//! API tokens of `cellos serve`: created by `cellos token create`, shown once, stored only as
//! a SHA-256 hash in `<home>/tokens.json` (mode 0600), listed and revoked without a restart.
//!
//! A token reads `cellos_<id>_<secret>`: `id` (8 hex digits) finds the entry, the 256-bit
//! `secret` proves possession. The server compares the hash of what it is shown with the
//! stored hash in constant time, and rereads the file when it changes, so a revocation holds
//! from the next request on. Writers take an exclusive lock and replace the file atomically
//! (temporary file, fsync, rename), so a reader never sees half a store.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cellos_core::spec::{check_subject_name, Scope};
use fs2::FileExt;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use zeroize::Zeroizing;

const FILE: &str = "tokens.json";
const LOCK: &str = "tokens.lock";
const PREFIX: &str = "cellos_";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("token store {path} is not valid: {reason}; restore it or remove it to start over")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "token store {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("no token {0:?}; `cellos token ls` lists them")]
    NotFound(String),
    #[error("--subject: {0}")]
    BadSubject(String),
}

/// One stored token: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: String,
    pub subject: String,
    /// The scopes this token carries; `None`: every scope its subject is granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
    /// SHA-256 of the whole token, hex.
    pub sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked: Option<OffsetDateTime>,
}

impl TokenRecord {
    /// Whether the token may be used at `now`.
    pub fn usable(&self, now: OffsetDateTime) -> bool {
        self.revoked.is_none() && self.expires.is_none_or(|e| now < e)
    }
}

/// Why a presented token was not accepted (said to the caller without telling which part
/// failed beyond what helps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    Unknown,
    Revoked,
    Expired,
}

/// The token store of one CellOS home.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
}

impl TokenStore {
    pub fn new(home: &Path) -> Self {
        Self {
            dir: home.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Creates a token for `subject`; returns it (the only time it exists in clear) and its
    /// record.
    pub fn create(
        &self,
        subject: &str,
        scopes: Option<Vec<Scope>>,
        expires: Option<OffsetDateTime>,
    ) -> Result<(Zeroizing<String>, TokenRecord), TokenError> {
        check_subject(subject)?;
        let _lock = self.lock()?;
        let mut records = self.load()?;
        let mut raw = Zeroizing::new([0u8; 36]);
        OsRng.fill_bytes(&mut raw[..]);
        let mut id = hex::encode(&raw[..4]);
        while records.iter().any(|r| r.id == id) {
            OsRng.fill_bytes(&mut raw[..4]);
            id = hex::encode(&raw[..4]);
        }
        let token = Zeroizing::new(format!("{PREFIX}{id}_{}", hex::encode(&raw[4..])));
        let record = TokenRecord {
            id,
            subject: subject.to_owned(),
            scopes,
            sha256: hash(&token),
            created: OffsetDateTime::now_utc(),
            expires,
            revoked: None,
        };
        records.push(record.clone());
        self.save(&records)?;
        Ok((token, record))
    }

    /// Every token, revoked and expired ones included.
    pub fn list(&self) -> Result<Vec<TokenRecord>, TokenError> {
        self.load()
    }

    /// Marks token `id` revoked (kept, so the listing shows when).
    pub fn revoke(&self, id: &str) -> Result<TokenRecord, TokenError> {
        let _lock = self.lock()?;
        let mut records = self.load()?;
        let record = records
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| TokenError::NotFound(id.to_owned()))?;
        record.revoked.get_or_insert_with(OffsetDateTime::now_utc);
        let out = record.clone();
        self.save(&records)?;
        Ok(out)
    }

    /// The record `presented` authenticates at `now`, from `records`.
    pub fn check<'a>(
        records: &'a [TokenRecord],
        presented: &str,
        now: OffsetDateTime,
    ) -> Result<&'a TokenRecord, Rejection> {
        let id = presented
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id)
            .ok_or(Rejection::Malformed)?;
        let record = records
            .iter()
            .find(|r| r.id == id)
            .ok_or(Rejection::Unknown)?;
        let matches: bool = hash(presented)
            .as_bytes()
            .ct_eq(record.sha256.as_bytes())
            .into();
        match () {
            _ if !matches => Err(Rejection::Unknown),
            _ if record.revoked.is_some() => Err(Rejection::Revoked),
            _ if !record.usable(now) => Err(Rejection::Expired),
            _ => Ok(record),
        }
    }

    fn lock(&self) -> Result<File, TokenError> {
        let path = self.dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| TokenError::Io {
                path: path.clone(),
                source,
            })?;
        file.lock_exclusive()
            .map_err(|source| TokenError::Io { path, source })?;
        Ok(file)
    }

    fn load(&self) -> Result<Vec<TokenRecord>, TokenError> {
        let path = self.path();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(TokenError::Io { path, source }),
        };
        let mode = file
            .metadata()
            .map_err(|source| TokenError::Io {
                path: path.clone(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(TokenError::Exposed {
                path,
                mode: mode & 0o777,
            });
        }
        serde_json::from_reader(io::BufReader::new(file)).map_err(|e| TokenError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    fn save(&self, records: &[TokenRecord]) -> Result<(), TokenError> {
        let path = self.path();
        let temp = self.dir.join(format!(".{FILE}.{}", std::process::id()));
        let io = |source| TokenError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io)?;
        let text = serde_json::to_vec_pretty(records).map_err(|e| TokenError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&temp, &path).map_err(io)
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn check_subject(subject: &str) -> Result<(), TokenError> {
    check_subject_name(subject).map_err(TokenError::BadSubject)
}
