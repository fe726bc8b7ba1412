//! Projection: folding an event log into per-cell state.
