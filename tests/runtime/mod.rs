//! Tests of the runtime stage: the spec's worked examples, scenarios with
//! reviewed traces, properties of the simulator and the command line.

mod bounds;
mod broadcast;
mod cli;
mod engagement;
mod examples;
mod intake_fuzz;
pub mod isolation;
mod parallel;
mod properties;
mod purity;
mod scenarios;
