//! Tests of the compile stage: snapshots of what people read (disassembly,
//! mermaid), hashing and versions, the bundle file format, the commands, and
//! generated workspaces.

mod cli;
mod format;
mod generated;
mod snapshots;
mod support;
mod versions;
