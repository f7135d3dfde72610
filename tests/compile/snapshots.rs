//! Snapshots of the disassembly of every workspace and of the mermaid chart
//! of every journey (journeys/, tests/ok/, tests/compile/fixtures/).

use super::support::{compile_path, snapshot_workspaces};
use journeyc::compile::disasm::disassemble;
use journeyc::compile::graph::{render_graph, GraphFormat};

#[test]
fn disassembly_of_every_workspace() {
    for (name, path) in snapshot_workspaces() {
        let bundle = compile_path(&path);
        insta::assert_snapshot!(format!("disasm__{name}"), disassemble(&bundle));
    }
}

#[test]
fn mermaid_of_every_journey() {
    for (name, path) in snapshot_workspaces() {
        let bundle = compile_path(&path);
        for program in &bundle.journeys {
            let journey = bundle.name(program.name);
            insta::assert_snapshot!(
                format!("mermaid__{name}__{journey}"),
                render_graph(&bundle, &[program], GraphFormat::Mermaid)
            );
        }
    }
}

#[test]
fn dot_of_the_statement_fixture() {
    let bundle = compile_path(&super::support::fixtures().join("statements.journey"));
    insta::assert_snapshot!(render_graph(&bundle, &[], GraphFormat::Dot));
}

#[test]
fn several_journeys_make_one_mermaid_diagram_with_subgraphs() {
    let bundle = compile_path(&super::support::fixtures().join("triggers.journey"));
    let text = render_graph(&bundle, &[], GraphFormat::Mermaid);
    assert_eq!(text.matches("flowchart TD").count(), 1);
    assert_eq!(text.matches("subgraph ").count(), bundle.journeys.len());
    // Node ids are unique across subgraphs.
    assert!(text.contains("j0start") && text.contains("j1start"));
}
