//! Secret brokers: where secret values come from.
