//! Tests of the compile stage.
