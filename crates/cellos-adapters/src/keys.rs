//! Host signing keys: creation, loading, permissions.
