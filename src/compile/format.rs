//! The on-disk form of a [`Bundle`]:
//!
//! ```text
//! offset 0   8 bytes  magic "JOURNEYC"
//! offset 8   4 bytes  FORMAT_VERSION, u32 little-endian
//! offset 12  …        the Bundle, postcard-encoded (nothing after it)
//! ```
//!
//! Both directions check the bundle's invariants ([`validate`]): a program
//! whose stored hash is not the hash of its content, a jump out of range or
//! an unknown id is refused, before writing and after reading.

use super::bytecode::*;
use super::hash;
use super::ids::{self, IdVisitor};

/// The first bytes of every bundle file.
pub const MAGIC: [u8; 8] = *b"JOURNEYC";
/// Magic plus format version.
pub const HEADER_LEN: usize = MAGIC.len() + 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not a journeyc bundle (the file does not start with {:?})", String::from_utf8_lossy(&MAGIC))]
    NotABundle,
    #[error("bundle format version {found} is not supported (this journeyc reads version {expected}); rebuild it")]
    UnsupportedVersion { found: u32, expected: u32 },
    #[error("the bundle is damaged: {0}")]
    Decode(String),
    #[error("the bundle could not be encoded: {0}")]
    Encode(String),
    #[error("invalid bundle: {0}")]
    Invalid(String),
    #[error("journey `{journey}`: stored hash {stored} is not the hash of its content ({computed})")]
    HashMismatch {
        journey: String,
        stored: String,
        computed: String,
    },
}

/// Serializes a bundle (header + postcard) after checking its invariants.
pub fn write_bundle(bundle: &Bundle) -> Result<Vec<u8>, BundleError> {
    validate(bundle)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + 4096);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    postcard::to_io(bundle, &mut bytes).map_err(|error| BundleError::Encode(error.to_string()))?;
    Ok(bytes)
}

/// Deserializes and validates a bundle written by [`write_bundle`].
pub fn read_bundle(bytes: &[u8]) -> Result<Bundle, BundleError> {
    if bytes.len() < HEADER_LEN || bytes[..MAGIC.len()] != MAGIC {
        return Err(BundleError::NotABundle);
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[MAGIC.len()..HEADER_LEN]);
    let found = u32::from_le_bytes(version);
    if found != FORMAT_VERSION {
        return Err(BundleError::UnsupportedVersion {
            found,
            expected: FORMAT_VERSION,
        });
    }
    let (bundle, rest): (Bundle, &[u8]) =
        postcard::take_from_bytes(&bytes[HEADER_LEN..]).map_err(|error| BundleError::Decode(error.to_string()))?;
    if !rest.is_empty() {
        return Err(BundleError::Decode(format!(
            "{} unexpected bytes after the bundle",
            rest.len()
        )));
    }
    validate(&bundle)?;
    Ok(bundle)
}

/// Decodes the postcard bytes of a bundle (no file header: the daemon's
/// store), older formats included: a format-1 bundle is the same but for a
/// schema without wire names or API triggers, a format-2 one without API
/// triggers; they are read as having none.
pub fn decode_stored(bytes: &[u8]) -> Result<Bundle, BundleError> {
    let decode = |error: postcard::Error| BundleError::Decode(error.to_string());
    let (version, _) = postcard::take_from_bytes::<u32>(bytes).map_err(decode)?;
    match version {
        1 => Ok(postcard::from_bytes::<OldBundle<SchemaV1>>(bytes)
            .map_err(decode)?
            .upgrade()),
        2 => Ok(postcard::from_bytes::<OldBundle<SchemaV2>>(bytes)
            .map_err(decode)?
            .upgrade()),
        _ => postcard::from_bytes(bytes).map_err(decode),
    }
}

/// [`Bundle`] as formats 1 and 2 wrote it, with their schema `S`.
#[derive(serde::Deserialize)]
struct OldBundle<S> {
    #[allow(dead_code)]
    format_version: u32,
    names: Vec<String>,
    schema: S,
    segments: Vec<SegmentDef>,
    messages: Vec<MessageDef>,
    settings: SettingsDef,
    journeys: Vec<Program>,
    history_window_seconds: i64,
}

impl<S: Into<crate::check::Schema>> OldBundle<S> {
    fn upgrade(self) -> Bundle {
        Bundle {
            format_version: FORMAT_VERSION,
            names: self.names,
            schema: self.schema.into(),
            segments: self.segments,
            messages: self.messages,
            settings: self.settings,
            journeys: self.journeys,
            history_window_seconds: self.history_window_seconds,
        }
    }
}

type Properties = std::collections::BTreeMap<String, crate::check::FieldType>;

/// `check::Schema` as format 1 wrote it (no wire names).
#[derive(serde::Deserialize)]
struct SchemaV1 {
    customer: Properties,
    events: std::collections::BTreeMap<String, Properties>,
}

impl From<SchemaV1> for crate::check::Schema {
    fn from(old: SchemaV1) -> Self {
        crate::check::Schema {
            customer: old.customer,
            events: old.events,
            ..Default::default()
        }
    }
}

/// `check::Schema` as format 2 wrote it (no API triggers).
#[derive(serde::Deserialize)]
struct SchemaV2 {
    customer: Properties,
    events: std::collections::BTreeMap<String, Properties>,
    wire: crate::check::WireNames,
}

impl From<SchemaV2> for crate::check::Schema {
    fn from(old: SchemaV2) -> Self {
        crate::check::Schema {
            customer: old.customer,
            events: old.events,
            wire: old.wire,
            ..Default::default()
        }
    }
}

/// Checks what the runtime relies on: known format version, ids and jump
/// targets in range, one line per instruction, code ending in `End`, split
/// arms ascending to 10 000 basis points, journeys sorted and unique, and
/// every stored hash equal to the hash of the program's content.
pub fn validate(bundle: &Bundle) -> Result<(), BundleError> {
    let invalid = |message: String| Err(BundleError::Invalid(message));
    if bundle.format_version != FORMAT_VERSION {
        return Err(BundleError::UnsupportedVersion {
            found: bundle.format_version,
            expected: FORMAT_VERSION,
        });
    }
    let mut range = RangeCheck {
        names: bundle.names.len(),
        segments: bundle.segments.len(),
        messages: bundle.messages.len(),
        error: None,
    };
    let mut copy = bundle.clone();
    ids::visit_bundle(&mut copy, &mut range);
    if let Some(error) = range.error {
        return invalid(error);
    }
    for pair in bundle.journeys.windows(2) {
        if bundle.name(pair[0].name) >= bundle.name(pair[1].name) {
            return invalid(format!(
                "journeys are not sorted and unique at `{}`",
                bundle.name(pair[1].name)
            ));
        }
    }
    for program in &bundle.journeys {
        let journey = bundle.name(program.name);
        let length = program.code.len() as u64;
        if program.lines.len() != program.code.len() {
            return invalid(format!(
                "journey `{journey}`: {} lines for {length} instructions",
                program.lines.len()
            ));
        }
        if program.code.last() != Some(&Instr::End) {
            return invalid(format!("journey `{journey}`: the code does not end with `End`"));
        }
        if program.holdout_basis_points > 10_000 {
            return invalid(format!("journey `{journey}`: holdout above 100%"));
        }
        for (label, pc) in &program.labels {
            if u64::from(*pc) >= length {
                return invalid(format!(
                    "journey `{journey}`: label `{}` out of range",
                    bundle.name(*label)
                ));
            }
        }
        for (pc, instr) in program.code.iter().enumerate() {
            let targets: Vec<Pc> = match instr {
                Instr::Jump { target } | Instr::JumpUnless { target, .. } => vec![*target],
                Instr::WaitFor { timeout, .. } => vec![*timeout],
                Instr::LoopNext { counter, target } => {
                    if *counter >= program.loop_counters {
                        return invalid(format!(
                            "journey `{journey}` pc {pc}: loop counter {counter} out of range"
                        ));
                    }
                    vec![*target]
                }
                Instr::LoopStart { counter, .. } => {
                    if *counter >= program.loop_counters {
                        return invalid(format!(
                            "journey `{journey}` pc {pc}: loop counter {counter} out of range"
                        ));
                    }
                    Vec::new()
                }
                Instr::Split { arms, .. } => {
                    let ascending = arms
                        .windows(2)
                        .all(|w| w[0].upper_basis_points <= w[1].upper_basis_points);
                    if arms.last().map(|arm| arm.upper_basis_points) != Some(10_000) || !ascending {
                        return invalid(format!(
                            "journey `{journey}` pc {pc}: split arms must ascend to 10000 basis points"
                        ));
                    }
                    arms.iter().map(|arm| arm.target).collect()
                }
                _ => Vec::new(),
            };
            if let Some(target) = targets.iter().find(|target| u64::from(**target) >= length) {
                return invalid(format!(
                    "journey `{journey}` pc {pc}: jump target {target} out of range"
                ));
            }
        }
        let computed = hash::program_hash(bundle, program);
        if computed != program.hash {
            return Err(BundleError::HashMismatch {
                journey: journey.to_string(),
                stored: program.hash.clone(),
                computed,
            });
        }
    }
    Ok(())
}

struct RangeCheck {
    names: usize,
    segments: usize,
    messages: usize,
    error: Option<String>,
}

impl RangeCheck {
    fn check(&mut self, kind: &str, id: u32, len: usize) {
        if id as usize >= len && self.error.is_none() {
            self.error = Some(format!("{kind} id {id} out of range ({len} defined)"));
        }
    }
}

impl IdVisitor for RangeCheck {
    fn name(&mut self, id: &mut NameId) {
        self.check("name", id.0, self.names);
    }
    fn segment(&mut self, id: &mut SegmentId) {
        self.check("segment", id.0, self.segments);
    }
    fn message(&mut self, id: &mut MessageId) {
        self.check("message", id.0, self.messages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{FieldType, Schema, Type};

    /// A store written before wire names holds format-1 bundles: they are
    /// read as bundles without wire names.
    #[test]
    fn format_one_bundles_are_read_from_stores() {
        let mut schema = Schema::default();
        schema.customer.insert(
            "plan".into(),
            FieldType {
                ty: Type::String,
                optional: true,
            },
        );
        schema.events.insert("ping".into(), Default::default());
        let bundle = Bundle {
            format_version: FORMAT_VERSION,
            names: vec!["ping".into()],
            schema,
            segments: Vec::new(),
            messages: Vec::new(),
            settings: SettingsDef::default(),
            journeys: Vec::new(),
            history_window_seconds: 7,
        };
        // Format 1 wrote the same fields, the schema without `wire`.
        let v1 = postcard::to_allocvec(&(
            1u32,
            &bundle.names,
            (&bundle.schema.customer, &bundle.schema.events),
            &bundle.segments,
            &bundle.messages,
            &bundle.settings,
            &bundle.journeys,
            bundle.history_window_seconds,
        ))
        .expect("encodes");
        assert_eq!(decode_stored(&v1), Ok(bundle.clone()));
        let v2 = postcard::to_allocvec(&bundle).expect("encodes");
        assert_ne!(v1, v2, "format 2 differs");
        assert_eq!(decode_stored(&v2), Ok(bundle));
    }
}
