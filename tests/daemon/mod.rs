//! Tests of the daemon stage: the real `journeyc serve` binary over loopback.

mod api;
mod crash;
mod harness;
mod lifecycle;
mod webhook;
