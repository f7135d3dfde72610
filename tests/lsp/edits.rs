//! Random edit sequences never crash or hang the server.

use super::client::{position, range, uri, Client};
use super::{Workspace, MAIN};
use proptest::prelude::*;
use serde_json::json;

const SNIPPETS: &[&str] = &[
    "{",
    "}",
    "send ",
    "سلام",
    "😀",
    "\n",
    "event.",
    "customer.",
    "\"",
    "wait for purchase within 1d {",
    "// x",
    " and ",
    "exit",
    "(",
    ")",
    "{{ ",
    " }}",
    "journey j {",
    "trigger ",
    "1d",
    "timezone \"",
    "",
    "\u{200c}",
    "\r\n",
];

#[derive(Clone, Debug)]
enum Step {
    Edit {
        line: u32,
        character: u32,
        delete: u32,
        insert: usize,
    },
    Ask {
        line: u32,
        character: u32,
        what: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u32..24, 0u32..60, 0u32..12, 0..SNIPPETS.len())
            .prop_map(|(line, character, delete, insert)| Step::Edit { line, character, delete, insert }),
        1 => (0u32..24, 0u32..60, 0usize..8).prop_map(|(line, character, what)| Step::Ask { line, character, what }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn random_edits_never_crash_or_hang_the_server(steps in proptest::collection::vec(step(), 1..40)) {
        let workspace = Workspace::new();
        let main = workspace.path("main.journey");
        let mut client = Client::start(workspace.dir.path());
        client.open(&main, MAIN);
        let document = json!({ "uri": uri(&main) });
        for (version, step) in steps.into_iter().enumerate() {
            match step {
                Step::Edit { line, character, delete, insert } => client.change(
                    &main,
                    version as i32 + 2,
                    range((line, character), (line, character + delete)),
                    SNIPPETS[insert],
                ),
                Step::Ask { line, character, what } => {
                    let at = json!({ "textDocument": document, "position": position(line, character) });
                    let (method, params) = match what {
                        0 => ("textDocument/hover", at),
                        1 => ("textDocument/completion", at),
                        2 => ("textDocument/definition", at),
                        3 => ("textDocument/semanticTokens/full", json!({ "textDocument": document })),
                        4 => ("textDocument/formatting", json!({ "textDocument": document, "options": { "tabSize": 2, "insertSpaces": true } })),
                        5 => ("textDocument/documentSymbol", json!({ "textDocument": document })),
                        6 => ("textDocument/inlayHint", json!({ "textDocument": document, "range": range((0, 0), (99, 0)) })),
                        _ => {
                            let mut params = at;
                            params["newName"] = json!("renamed");
                            ("textDocument/rename", params)
                        }
                    };
                    let response = client.call(method, params);
                    // A refusal is fine (rename of a keyword); a crash is not.
                    prop_assert_ne!(response["error"]["code"].as_i64(), Some(-32603), "{} crashed: {}", method, response);
                }
            }
        }
        // Still answering, and exits cleanly.
        client.request("textDocument/documentSymbol", json!({ "textDocument": document }));
        client.shutdown();
    }
}
