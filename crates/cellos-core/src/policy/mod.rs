//! Admission: checking a spec against policy packs.
