//! What a build can serve, and the spec fields that ask for more.
//!
//! A spec can be valid and still ask for something this build was composed without (an `s3`
//! export target when only local sinks exist). Refusing that at admission, before anything is
//! created, beats finding out after the workload ran; `cellos validate` reports it the same way.

use std::collections::BTreeSet;

use crate::spec::document::{ExecutionCellSpec, ExportTargetKind};
use crate::spec::problem::Problems;

/// The features of a composed build that a spec may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Export target kinds the build has a sink for (the default local directory always exists).
    pub export_kinds: BTreeSet<ExportTargetKind>,
    /// Whether the in-cell telemetry agent is installed (`spec.telemetry.enabled`).
    pub telemetry_agent: bool,
}

impl Capabilities {
    /// Every feature the spec language has: for a composition that serves all of them.
    pub fn all() -> Self {
        Self {
            export_kinds: ExportTargetKind::ALL.into_iter().collect(),
            telemetry_agent: true,
        }
    }
}

impl ExportTargetKind {
    /// Every kind, in declaration order.
    pub const ALL: [ExportTargetKind; 3] = [
        ExportTargetKind::LocalPath,
        ExportTargetKind::Http,
        ExportTargetKind::S3,
    ];

    /// The kind as written in a spec.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportTargetKind::LocalPath => "localPath",
            ExportTargetKind::Http => "http",
            ExportTargetKind::S3 => "s3",
        }
    }
}

/// Adds a problem for every feature `spec` (found at `at`) asks for that `caps` lacks.
pub(crate) fn check_capabilities(
    spec: &ExecutionCellSpec,
    caps: &Capabilities,
    at: &str,
    p: &mut Problems,
) {
    let export = spec.export.as_ref();
    for (i, target) in export.map_or(&[][..], |e| &e.targets).iter().enumerate() {
        if !caps.export_kinds.contains(&target.kind) {
            let served: Vec<&str> = caps.export_kinds.iter().map(|k| k.as_str()).collect();
            p.push(
                format!("{at}.export.targets[{i}].kind"),
                format!(
                    "this build cannot push to {} targets (it serves: {}); declare a target of a kind it serves",
                    target.kind.as_str(),
                    if served.is_empty() { "none".to_owned() } else { served.join(", ") },
                ),
            );
        }
    }
    if spec.telemetry.as_ref().is_some_and(|t| t.enabled) && !caps.telemetry_agent {
        p.push(
            format!("{at}.telemetry.enabled"),
            "this build has no telemetry agent (cellos-telemetry-agent is not installed next to cellos); install it or set enabled: false",
        );
    }
}
