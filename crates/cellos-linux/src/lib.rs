//! cellos-linux
