//! The content hash that identifies a journey version.
//!
//! `Program::hash` is the hex SHA-256 of a canonical form of the program:
//! the program with its `hash` and `lines` cleared and every id renumbered in
//! the fixed walk order of [`super::ids`] (first use = 0), serialized with
//! postcard together with the names those local ids stand for (segments and
//! messages by name). So the hash:
//!
//! - ignores layout, comments and line numbers (no spans, no lines);
//! - ignores other journeys and the bundle's interning order (ids are local);
//! - covers the journey's name, trigger, entry rule, exit rules, goals,
//!   effective quiet hours and timezone (including those inherited from
//!   `settings { … }`), its own cap, holdout, migrate flag, code and labels;
//! - refers to segments and messages **by name only**: editing a segment's
//!   condition or a message's template does not make a new version of the
//!   journeys that use them (like editing a shared template in an ESP; see
//!   `docs/bytecode.md`).

use super::bytecode::*;
use super::ids::{self, IdVisitor};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Part of the hashed bytes; bump it when the canonical form changes (every
/// hash changes with it).
pub const HASH_DOMAIN: &str = "journeyc/program/v1";

#[derive(Serialize)]
struct Canonical<'a> {
    domain: &'a str,
    names: Vec<String>,
    segments: Vec<String>,
    messages: Vec<String>,
    program: Program,
}

/// Renumbers ids in first-use order, remembering what each stands for.
struct Localize<'b> {
    bundle: &'b Bundle,
    names: Vec<String>,
    name_ids: HashMap<u32, u32>,
    segments: Vec<String>,
    segment_ids: HashMap<u32, u32>,
    messages: Vec<String>,
    message_ids: HashMap<u32, u32>,
}

fn local(table: &mut HashMap<u32, u32>, values: &mut Vec<String>, id: u32, value: impl FnOnce() -> String) -> u32 {
    *table.entry(id).or_insert_with(|| {
        values.push(value());
        (values.len() - 1) as u32
    })
}

impl IdVisitor for Localize<'_> {
    fn name(&mut self, id: &mut NameId) {
        let bundle = self.bundle;
        id.0 = local(&mut self.name_ids, &mut self.names, id.0, || {
            super::expr::name_of(bundle, *id)
        });
    }
    fn segment(&mut self, id: &mut SegmentId) {
        let bundle = self.bundle;
        id.0 = local(&mut self.segment_ids, &mut self.segments, id.0, || {
            super::expr::segment_name(bundle, *id)
        });
    }
    fn message(&mut self, id: &mut MessageId) {
        let bundle = self.bundle;
        id.0 = local(&mut self.message_ids, &mut self.messages, id.0, || {
            super::expr::message_name(bundle, *id)
        });
    }
}

/// The bytes that are hashed (see the module documentation).
pub fn canonical_bytes(bundle: &Bundle, program: &Program) -> Vec<u8> {
    let mut program = program.clone();
    program.hash.clear();
    program.lines.clear();
    let mut localize = Localize {
        bundle,
        names: Vec::new(),
        name_ids: HashMap::new(),
        segments: Vec::new(),
        segment_ids: HashMap::new(),
        messages: Vec::new(),
        message_ids: HashMap::new(),
    };
    ids::visit_program(&mut program, &mut localize);
    let canonical = Canonical {
        domain: HASH_DOMAIN,
        names: localize.names,
        segments: localize.segments,
        messages: localize.messages,
        program,
    };
    postcard::to_allocvec(&canonical).expect("postcard serializes plain in-memory data")
}

/// Hex SHA-256 of [`canonical_bytes`]. `program` need not be in `bundle`; its
/// ids must refer to `bundle`'s names, segments and messages.
pub fn program_hash(bundle: &Bundle, program: &Program) -> String {
    let digest = Sha256::digest(canonical_bytes(bundle, program));
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}
