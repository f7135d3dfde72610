//! Tests of the daemon stage.
