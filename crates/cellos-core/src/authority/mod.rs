//! Typed authority: the four evidence kinds and the derivation graph.
