//! Export sinks: where artifacts go after the workload ends.
