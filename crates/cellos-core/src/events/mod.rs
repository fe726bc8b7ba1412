//! Event catalogue: CloudEvents 1.0 builders for every event family.

use serde::{Deserialize, Serialize};

/// A CloudEvents 1.0 structured-mode event. Placeholder shape; the catalogue owns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub subject: Option<String>,
    pub time: String,
    pub data: serde_json::Value,
}
