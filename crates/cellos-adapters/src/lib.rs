//! cellos-adapters
