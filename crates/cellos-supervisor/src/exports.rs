//! Choosing an export sink for each declared artifact.

use std::sync::Arc;

use cellos_core::ports::{ExportSink, PortError};
use cellos_core::spec::ExportTarget;

/// Resolves the sink for an artifact's target (`None` = the default local export directory).
/// Implemented at the composition root, where adapters are chosen.
pub trait ExportRouter: Send + Sync {
    fn sink_for(&self, target: Option<&ExportTarget>) -> Result<Arc<dyn ExportSink>, PortError>;
}
