//! `token create|ls|revoke`: the API tokens `cellos serve` accepts on TCP. A token is printed
//! once, at creation; the store keeps only its hash.

use std::path::Path;

use cellos_adapters::tokens::TokenStore;
use cellos_core::spec::Scope;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::exit::Failure;

/// Lifetime of a token when `--expires` is not given.
pub const DEFAULT_LIFETIME_DAYS: i64 = 90;

/// When a token stops working (`None`: never).
#[derive(Debug, Clone, Copy)]
pub struct Expiry(pub Option<OffsetDateTime>);

/// `--expires`: `30d`, `12h`, `45m`, an RFC 3339 time, or `never`.
pub fn parse_expiry(text: &str) -> Result<Expiry, String> {
    if text == "never" {
        return Ok(Expiry(None));
    }
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(Expiry(Some(at)));
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| expiry_error(text))?;
    let span = match unit {
        "d" => Duration::days(n),
        "h" => Duration::hours(n),
        "m" => Duration::minutes(n),
        _ => return Err(expiry_error(text)),
    };
    Ok(Expiry(Some(OffsetDateTime::now_utc() + span)))
}

fn expiry_error(text: &str) -> String {
    format!("{text:?} is not a lifetime: write 30d, 12h, 45m, an RFC 3339 time, or never")
}

/// One `--scopes` entry.
pub fn parse_scope(text: &str) -> Result<Scope, String> {
    text.trim().parse()
}

pub fn create(
    home: &Path,
    subject: &str,
    scopes: Option<Vec<Scope>>,
    expires: Option<Expiry>,
) -> Result<u8, Failure> {
    let expires = expires.map_or_else(
        || Some(OffsetDateTime::now_utc() + Duration::days(DEFAULT_LIFETIME_DAYS)),
        |e| e.0,
    );
    let (token, record) = TokenStore::new(home)
        .create(subject, scopes, expires)
        .map_err(|e| Failure::cellos(e.to_string()))?;
    println!("{}", token.as_str());
    eprintln!(
        "cellos: token {} for {} ({}), expires {}; it is shown only now",
        record.id,
        record.subject,
        scopes_text(record.scopes.as_deref()),
        record
            .expires
            .and_then(|e| e.format(&Rfc3339).ok())
            .unwrap_or_else(|| "never".into())
    );
    Ok(0)
}

pub fn ls(home: &Path, json: bool) -> Result<u8, Failure> {
    let records = TokenStore::new(home)
        .list()
        .map_err(|e| Failure::cellos(e.to_string()))?;
    if json {
        let text = serde_json::to_string_pretty(&records)
            .map_err(|e| Failure::cellos(format!("encode the tokens: {e}")))?;
        println!("{text}");
        return Ok(0);
    }
    let now = OffsetDateTime::now_utc();
    for r in &records {
        let state = match (r.revoked, r.usable(now)) {
            (Some(_), _) => "revoked",
            (None, false) => "expired",
            (None, true) => "active",
        };
        println!(
            "{}  {:<8} {}  {}",
            r.id,
            state,
            r.subject,
            scopes_text(r.scopes.as_deref())
        );
    }
    Ok(0)
}

pub fn revoke(home: &Path, id: &str) -> Result<u8, Failure> {
    let record = TokenStore::new(home)
        .revoke(id)
        .map_err(|e| Failure::cellos(e.to_string()))?;
    println!("revoked {} ({})", record.id, record.subject);
    Ok(0)
}

fn scopes_text(scopes: Option<&[Scope]>) -> String {
    match scopes {
        None => "every scope its subject is granted".into(),
        Some(list) => list
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(","),
    }
}
