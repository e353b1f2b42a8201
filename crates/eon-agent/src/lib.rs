//! eon-agent
