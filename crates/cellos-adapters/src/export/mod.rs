//! Export sinks: where artifacts go after the workload ends. Local directories directly;
//! `http` and `s3` destinations through the host's [`Outbox`], so that an artifact a
//! destination did not take is kept, never lost.

mod http;
mod local;
mod outbox;
mod remote;
mod s3;

pub use local::{LocalExportSink, MAX_CELL_ID_LEN, MAX_EXPORT_NAME_LEN};
pub use outbox::{Outbox, StagedExport};
pub use remote::{
    deliver, destination, ExportSecrets, RemoteExportSink, DEFAULT_RETRIES, DEFAULT_TIMEOUT,
};
pub use s3::PART_BYTES;
