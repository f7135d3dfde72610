//! The bundle file: header, round trip, determinism, and refusal of damaged
//! or inconsistent bundles.

use super::support::{compile_path, fixtures, snapshot_workspaces};
use journeyc::compile::bytecode::{Instr, FORMAT_VERSION};
use journeyc::compile::format::validate;
use journeyc::compile::{read_bundle, write_bundle, BundleError, MAGIC};

#[test]
fn every_workspace_round_trips() {
    for (name, path) in snapshot_workspaces() {
        let bundle = compile_path(&path);
        let bytes = write_bundle(&bundle).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(&bytes[..8], &MAGIC);
        assert_eq!(&bytes[8..12], &FORMAT_VERSION.to_le_bytes());
        let back = read_bundle(&bytes).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(back, bundle, "{name}");
    }
}

#[test]
fn building_twice_gives_identical_bytes() {
    for (name, path) in snapshot_workspaces() {
        let first = write_bundle(&compile_path(&path)).expect("write");
        let second = write_bundle(&compile_path(&path)).expect("write");
        assert!(first == second, "{name}: two builds differ");
    }
}

#[test]
fn names_are_sorted_unique_and_programs_consistent() {
    for (name, path) in snapshot_workspaces() {
        let bundle = compile_path(&path);
        assert!(
            bundle.names.windows(2).all(|w| w[0] < w[1]),
            "{name}: names not sorted/unique"
        );
        for program in &bundle.journeys {
            assert_eq!(program.code.len(), program.lines.len());
            assert!(
                program.lines.iter().all(|line| *line > 0),
                "{name}: missing line numbers"
            );
            assert_eq!(program.code.last(), Some(&Instr::End));
            assert_eq!(program.hash.len(), 64);
        }
    }
}

#[test]
fn damaged_bundles_are_refused() {
    let bundle = compile_path(&fixtures().join("statements.journey"));
    let bytes = write_bundle(&bundle).expect("write");

    assert_eq!(read_bundle(b"not a bundle at all"), Err(BundleError::NotABundle));
    assert_eq!(read_bundle(&bytes[..5]), Err(BundleError::NotABundle));

    let mut newer = bytes.clone();
    newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert_eq!(
        read_bundle(&newer),
        Err(BundleError::UnsupportedVersion {
            found: FORMAT_VERSION + 1,
            expected: FORMAT_VERSION
        })
    );

    assert!(matches!(
        read_bundle(&bytes[..bytes.len() - 3]),
        Err(BundleError::Decode(_))
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(read_bundle(&longer), Err(BundleError::Decode(_))));
}

#[test]
fn inconsistent_bundles_are_refused_before_writing() {
    let bundle = compile_path(&fixtures().join("statements.journey"));

    let mut tampered = bundle.clone();
    tampered.journeys[0].code[1] = Instr::Wait { seconds: 1 };
    assert!(matches!(write_bundle(&tampered), Err(BundleError::HashMismatch { .. })));

    let mut out_of_range = bundle.clone();
    let length = out_of_range.journeys[0].code.len() as u32;
    out_of_range.journeys[0].code[0] = Instr::Jump { target: length };
    assert!(matches!(validate(&out_of_range), Err(BundleError::Invalid(_))));

    let mut short_lines = bundle.clone();
    short_lines.journeys[0].lines.pop();
    assert!(matches!(validate(&short_lines), Err(BundleError::Invalid(_))));

    let mut bad_name = bundle;
    bad_name.journeys[0].name.0 = 10_000;
    assert!(matches!(validate(&bad_name), Err(BundleError::Invalid(_))));
}

#[test]
fn line_numbers_are_not_in_the_hash_but_are_in_the_file() {
    let bundle = compile_path(&fixtures().join("statements.journey"));
    let mut moved = bundle.clone();
    for line in &mut moved.journeys[0].lines {
        *line += 1;
    }
    // Still valid: the hash ignores lines.
    validate(&moved).expect("valid");
    assert_ne!(
        write_bundle(&moved).expect("write"),
        write_bundle(&bundle).expect("write")
    );
}

#[test]
fn compile_without_sources_differs_only_in_lines() {
    let path = fixtures().join("statements.journey");
    let sources = journeyc::workspace::load(&[path]).expect("load");
    let outcome = journeyc::check::check_workspace(&sources, &journeyc::workspace::DiskFiles);
    let checked = outcome.checked.expect("checks");
    let with_lines = journeyc::compile::compile_with_sources(&checked, &sources);
    let mut without = journeyc::compile::compile(&checked);
    assert!(without.journeys.iter().all(|p| p.lines.iter().all(|l| *l == 0)));
    for (program, lined) in without.journeys.iter_mut().zip(&with_lines.journeys) {
        program.lines.clone_from(&lined.lines);
    }
    assert_eq!(without, with_lines);
}

#[test]
fn the_compile_stage_does_no_io() {
    let dir = super::support::root().join("src/compile");
    for entry in std::fs::read_dir(&dir).expect("src/compile") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("source");
        for forbidden in ["std::fs", "sled", "tokio", "std::net", "SystemTime", "Utc::now"] {
            assert!(!text.contains(forbidden), "{} uses {forbidden}", path.display());
        }
    }
}
