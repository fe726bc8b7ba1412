//! Crash reconciliation: find what dead supervisors left behind and remove it, as evidence.

use cellos_core::ports::{PortError, TeardownReport};

use crate::lifecycle::{Supervisor, SupervisorError};

/// What one `gc` pass did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub reclaimed: Vec<TeardownReport>,
    /// Cells that could not be reclaimed, with why; they stay listed for the next pass.
    pub failed: Vec<(String, PortError)>,
}

impl Supervisor {
    /// Reclaim every orphaned cell. Each reclaim is recorded as an event.
    pub fn gc(&self) -> Result<GcReport, SupervisorError> {
        let mut report = GcReport::default();
        let orphans = self.backend().orphans().map_err(SupervisorError::Backend)?;
        for cell_id in orphans {
            match self.backend().reclaim(&cell_id) {
                Ok(teardown) => {
                    self.recorder(&cell_id, "gc")
                        .gc_reclaimed(&teardown)
                        .map_err(SupervisorError::Events)?;
                    report.reclaimed.push(teardown);
                }
                Err(err) => report.failed.push((cell_id, err)),
            }
        }
        Ok(report)
    }
}
