//! eon-testkit
