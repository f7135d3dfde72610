//! Tests of the runtime stage.
