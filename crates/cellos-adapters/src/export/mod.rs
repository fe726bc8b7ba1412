//! Export sinks: where artifacts go after the workload ends.

mod local;

pub use local::{LocalExportSink, MAX_CELL_ID_LEN, MAX_EXPORT_NAME_LEN};
