//! Integrity: canonical bytes, hash chain and signatures over events.
