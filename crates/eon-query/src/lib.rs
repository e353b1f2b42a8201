//! eon-query
