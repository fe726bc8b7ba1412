//! cellos-supervisor
