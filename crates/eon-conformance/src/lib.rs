//! eon-conformance
