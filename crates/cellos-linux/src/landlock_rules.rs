//! landlock_rules
