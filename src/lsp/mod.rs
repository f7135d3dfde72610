//! `journeyc lsp`: the language server (LSP 3.17 over stdio).
//!
//! Built on `lsp-server` + `lsp-types` (rust-analyzer's transport): a plain
//! synchronous loop over one channel of messages, which makes debouncing and
//! "re-check only what changed" a matter of when the loop runs the check.
//!
//! **Invariants:**
//! - One [`Doc`] per `.journey` file under the workspace folders, its index
//!   in `docs` is its `FileId`; open documents override the disk.
//! - A file is re-parsed only when its text changed; the cross-file check
//!   (`check::check_parsed`) then runs on the cached ASTs. While some file
//!   has a syntax error, that file shows its syntax errors and the others
//!   keep the diagnostics of the last full check (the declarations of the
//!   broken file are unknown; flagging their uses would be noise).
//! - Diagnostics are published only for files whose diagnostics changed
//!   (an empty list clears them).
//! - A request never crashes the server: each message is handled under
//!   `catch_unwind`, a failure answers an error for that request only.

mod complete;
mod features;
mod index;
mod text;

use crate::check::{check_parsed, Checked};
use crate::diagnostic::{Diagnostic, Severity};
use crate::source::{FileId, SourceMap, Span};
use crate::syntax::ast;
use crate::workspace::DiskFiles;
use index::Index;
use lsp_server::{Connection, Message, Notification, Request, RequestId, Response};
use lsp_types::notification::Notification as _;
use lsp_types::request::Request as _;
use lsp_types::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use text::LineIndex;

/// Default wait after a change before checking, so a burst of keystrokes
/// is checked once. `initializationOptions: {"debounceMs": N}` sets it.
const DEBOUNCE_DEFAULT: Duration = Duration::from_millis(10);

pub fn run() -> u8 {
    let (connection, threads) = Connection::stdio();
    let code = match serve(&connection) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("journeyc lsp: {error}");
            1
        }
    };
    drop(connection);
    let _ = threads.join();
    code
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn serve(connection: &Connection) -> Result<(), Error> {
    let (id, params) = connection.initialize_start()?;
    let params: InitializeParams = serde_json::from_value(params)?;
    connection.initialize_finish(
        id,
        serde_json::json!({
            "capabilities": capabilities(),
            "serverInfo": { "name": "journeyc", "version": env!("CARGO_PKG_VERSION") },
        }),
    )?;
    let mut server = Server::new(connection, &params);
    server.analyze();
    server.publish();
    loop {
        let message = match server.due {
            Some(due) => match connection
                .receiver
                .recv_timeout(due.saturating_duration_since(Instant::now()))
            {
                Ok(message) => message,
                Err(crossbeam_timeout) if crossbeam_timeout.is_timeout() => {
                    server.refresh();
                    continue;
                }
                Err(_) => return Ok(()),
            },
            None => match connection.receiver.recv() {
                Ok(message) => message,
                Err(_) => return Ok(()),
            },
        };
        match message {
            Message::Request(request) => {
                if connection.handle_shutdown(&request)? {
                    return Ok(());
                }
                let id = request.id.clone();
                let method = request.method.clone();
                let response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.request(request)))
                    .unwrap_or_else(|_| {
                        Response::new_err(
                            id,
                            lsp_server::ErrorCode::InternalError as i32,
                            format!("journeyc failed to answer {method}"),
                        )
                    });
                connection.sender.send(Message::Response(response))?;
            }
            Message::Notification(notification) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.notification(notification)));
            }
            Message::Response(_) => {}
        }
    }
}

fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        position_encoding: Some(PositionEncodingKind::UTF16),
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::INCREMENTAL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        references_provider: Some(OneOf::Left(true)),
        rename_provider: Some(OneOf::Right(RenameOptions {
            prepare_provider: Some(true),
            work_done_progress_options: WorkDoneProgressOptions::default(),
        })),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some([".", " ", "\"", "(", "{"].iter().map(|s| s.to_string()).collect()),
            ..CompletionOptions::default()
        }),
        document_symbol_provider: Some(OneOf::Left(true)),
        workspace_symbol_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(CodeActionProviderCapability::Options(CodeActionOptions {
            code_action_kinds: Some(vec![CodeActionKind::QUICKFIX]),
            ..CodeActionOptions::default()
        })),
        semantic_tokens_provider: Some(SemanticTokensServerCapabilities::SemanticTokensOptions(
            SemanticTokensOptions {
                legend: SemanticTokensLegend {
                    token_types: features::TOKEN_TYPES.to_vec(),
                    token_modifiers: vec![SemanticTokenModifier::DECLARATION],
                },
                full: Some(SemanticTokensFullOptions::Bool(true)),
                range: None,
                work_done_progress_options: WorkDoneProgressOptions::default(),
            },
        )),
        inlay_hint_provider: Some(OneOf::Left(true)),
        ..ServerCapabilities::default()
    }
}

/// One `.journey` file of the workspace.
pub(crate) struct Doc {
    pub uri: Url,
    pub path: PathBuf,
    pub text: String,
    pub lines: LineIndex,
    pub version: Option<i32>,
    /// Open in the editor (its text is the editor's, not the disk's).
    pub open: bool,
    /// The parse of `text`; `None` until parsed again after a change.
    pub parsed: Option<Result<ast::File, Vec<Diagnostic>>>,
    /// The last parse that succeeded, and its text: while the file is
    /// broken, navigation and completion use the names it declared.
    pub good: Option<(ast::File, String)>,
}

impl Doc {
    fn set_text(&mut self, text: String) {
        self.lines = LineIndex::new(&text);
        self.text = text;
        self.parsed = None;
    }

    pub fn range(&self, span: Span) -> Range {
        self.lines.range(&self.text, span.start as usize, span.end as usize)
    }

    pub fn offset(&self, position: Position) -> usize {
        self.lines.offset(&self.text, position)
    }

    pub fn slice(&self, span: Span) -> &str {
        self.text.get(span.start as usize..span.end as usize).unwrap_or("")
    }
}

pub(crate) struct Server<'a> {
    connection: &'a Connection,
    pub docs: Vec<Doc>,
    by_uri: HashMap<Url, usize>,
    pub index: Index,
    /// The last workspace that checked clean (bounds, message variants).
    pub checked: Option<Checked>,
    /// The diagnostics of each file as of the last analysis.
    pub diagnostics: Vec<Vec<Diagnostic>>,
    /// What each file was last sent.
    published: Vec<Option<Vec<lsp_types::Diagnostic>>>,
    /// When the pending changes are to be checked.
    due: Option<Instant>,
    debounce: Duration,
}

impl<'a> Server<'a> {
    fn new(connection: &'a Connection, params: &InitializeParams) -> Server<'a> {
        let debounce = params
            .initialization_options
            .as_ref()
            .and_then(|o| o.get("debounceMs"))
            .and_then(|v| v.as_u64())
            .map_or(DEBOUNCE_DEFAULT, Duration::from_millis);
        let mut server = Server {
            connection,
            docs: Vec::new(),
            by_uri: HashMap::new(),
            index: Index::default(),
            checked: None,
            diagnostics: Vec::new(),
            published: Vec::new(),
            due: None,
            debounce,
        };
        let mut roots: Vec<PathBuf> = params
            .workspace_folders
            .iter()
            .flatten()
            .filter_map(|folder| folder.uri.to_file_path().ok())
            .collect();
        #[allow(deprecated)]
        if roots.is_empty() {
            roots.extend(params.root_uri.as_ref().and_then(|uri| uri.to_file_path().ok()));
        }
        let mut paths = Vec::new();
        for root in &roots {
            collect(root, &mut paths);
        }
        paths.sort();
        paths.dedup();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            server.add(&path, text);
        }
        server
    }

    /// Adds a file; its id is its position.
    fn add(&mut self, path: &Path, text: String) -> Option<usize> {
        let uri = Url::from_file_path(path).ok()?;
        if let Some(&index) = self.by_uri.get(&uri) {
            return Some(index);
        }
        let index = self.docs.len();
        self.docs.push(Doc {
            uri: uri.clone(),
            path: path.to_path_buf(),
            lines: LineIndex::new(&text),
            text,
            version: None,
            open: false,
            parsed: None,
            good: None,
        });
        self.by_uri.insert(uri, index);
        self.published.push(None);
        self.diagnostics.push(Vec::new());
        Some(index)
    }

    pub fn doc(&self, uri: &Url) -> Option<(FileId, &Doc)> {
        let index = *self.by_uri.get(uri)?;
        Some((FileId(index as u32), &self.docs[index]))
    }

    /// Parses what changed, checks the workspace, rebuilds the index.
    fn analyze(&mut self) {
        for (index, doc) in self.docs.iter_mut().enumerate() {
            if doc.parsed.is_none() {
                let parsed = crate::syntax::parse_file(FileId(index as u32), &doc.text);
                if let Ok(file) = &parsed {
                    doc.good = Some((file.clone(), doc.text.clone()));
                }
                doc.parsed = Some(parsed);
            }
        }
        let mut sources = SourceMap::new();
        for doc in &self.docs {
            sources.add(doc.path.clone(), doc.text.clone());
        }
        let parsed: Vec<&ast::File> = self
            .docs
            .iter()
            .filter_map(|doc| doc.parsed.as_ref().and_then(|p| p.as_ref().ok()))
            .collect();
        self.index = Index::build(
            &self
                .docs
                .iter()
                .filter_map(|doc| doc.good.as_ref().map(|(file, text)| (file, text.as_str())))
                .collect::<Vec<_>>(),
        );
        let broken: Vec<usize> = (0..self.docs.len())
            .filter(|&i| matches!(self.docs[i].parsed, Some(Err(_))))
            .collect();
        if broken.is_empty() {
            let files: Vec<ast::File> = parsed.into_iter().cloned().collect();
            let outcome = check_parsed(&sources, &DiskFiles, files);
            for list in &mut self.diagnostics {
                list.clear();
            }
            for diagnostic in outcome.diagnostics {
                if let Some(list) = self.diagnostics.get_mut(diagnostic.primary.span.file.0 as usize) {
                    list.push(diagnostic);
                }
            }
            if outcome.checked.is_some() {
                self.checked = outcome.checked;
            }
        } else {
            for index in broken {
                if let Some(Err(errors)) = &self.docs[index].parsed {
                    self.diagnostics[index] = errors.clone();
                }
            }
        }
    }

    /// Sends the diagnostics that changed.
    fn publish(&mut self) {
        for index in 0..self.docs.len() {
            let doc = &self.docs[index];
            let converted: Vec<lsp_types::Diagnostic> =
                self.diagnostics[index].iter().map(|d| self.convert(d)).collect();
            if self.published[index].as_ref() == Some(&converted)
                || (self.published[index].is_none() && converted.is_empty())
            {
                continue;
            }
            let params = PublishDiagnosticsParams::new(doc.uri.clone(), converted.clone(), doc.version);
            self.notify::<notification::PublishDiagnostics>(params);
            self.published[index] = Some(converted);
        }
    }

    fn refresh(&mut self) {
        self.due = None;
        self.analyze();
        self.publish();
    }

    /// Answers from the current text: pending changes are analysed first.
    fn settle(&mut self) {
        if self.due.is_some() {
            self.refresh();
        }
    }

    pub fn location(&self, span: Span) -> Option<Location> {
        let doc = self.docs.get(span.file.0 as usize)?;
        Some(Location::new(doc.uri.clone(), doc.range(span)))
    }

    fn convert(&self, diagnostic: &Diagnostic) -> lsp_types::Diagnostic {
        let span = diagnostic.primary.span;
        let doc = &self.docs[span.file.0 as usize];
        let mut message = diagnostic.message.clone();
        if !diagnostic.primary.message.is_empty() {
            message.push_str(&format!("\n{}", diagnostic.primary.message));
        }
        if let Some(help) = &diagnostic.help {
            message.push_str(&format!("\nhelp: {help}"));
        }
        let related: Vec<DiagnosticRelatedInformation> = diagnostic
            .secondary
            .iter()
            .filter_map(|label| {
                Some(DiagnosticRelatedInformation {
                    location: self.location(label.span)?,
                    message: label.message.clone(),
                })
            })
            .collect();
        lsp_types::Diagnostic {
            range: doc.range(span),
            severity: Some(match diagnostic.severity {
                Severity::Error => DiagnosticSeverity::ERROR,
                Severity::Warning => DiagnosticSeverity::WARNING,
            }),
            code: Some(NumberOrString::String(diagnostic.code.to_string())),
            source: Some("journeyc".into()),
            message,
            related_information: (!related.is_empty()).then_some(related),
            data: diagnostic.help.as_ref().map(|help| serde_json::json!({ "help": help })),
            ..lsp_types::Diagnostic::default()
        }
    }

    fn notify<N: lsp_types::notification::Notification>(&self, params: N::Params) {
        let notification = Notification::new(N::METHOD.to_string(), params);
        let _ = self.connection.sender.send(Message::Notification(notification));
    }

    fn notification(&mut self, notification: Notification) {
        match notification.method.as_str() {
            notification::DidOpenTextDocument::METHOD => {
                let Ok(params) = serde_json::from_value::<DidOpenTextDocumentParams>(notification.params) else {
                    return;
                };
                let document = params.text_document;
                let index = match self.by_uri.get(&document.uri) {
                    Some(&index) => Some(index),
                    None => document
                        .uri
                        .to_file_path()
                        .ok()
                        .and_then(|path| self.add(&path, String::new())),
                };
                if let Some(index) = index {
                    let doc = &mut self.docs[index];
                    doc.open = true;
                    doc.version = Some(document.version);
                    if doc.text != document.text || doc.parsed.is_none() {
                        doc.set_text(document.text);
                    }
                    self.schedule();
                }
            }
            notification::DidChangeTextDocument::METHOD => {
                let Ok(params) = serde_json::from_value::<DidChangeTextDocumentParams>(notification.params) else {
                    return;
                };
                let Some(&index) = self.by_uri.get(&params.text_document.uri) else {
                    return;
                };
                let doc = &mut self.docs[index];
                let mut text = std::mem::take(&mut doc.text);
                for change in params.content_changes {
                    match change.range {
                        Some(range) => {
                            let lines = LineIndex::new(&text);
                            let start = lines.offset(&text, range.start);
                            let end = lines.offset(&text, range.end).max(start);
                            text.replace_range(start..end, &change.text);
                        }
                        None => text = change.text,
                    }
                }
                doc.version = Some(params.text_document.version);
                doc.set_text(text);
                self.schedule();
            }
            notification::DidCloseTextDocument::METHOD => {
                let Ok(params) = serde_json::from_value::<DidCloseTextDocumentParams>(notification.params) else {
                    return;
                };
                if let Some(&index) = self.by_uri.get(&params.text_document.uri) {
                    let doc = &mut self.docs[index];
                    doc.open = false;
                    doc.version = None;
                    let disk = std::fs::read_to_string(&doc.path).unwrap_or_default();
                    if disk != doc.text {
                        doc.set_text(disk);
                        self.schedule();
                    }
                }
            }
            notification::DidChangeWatchedFiles::METHOD => {
                let Ok(params) = serde_json::from_value::<DidChangeWatchedFilesParams>(notification.params) else {
                    return;
                };
                for change in params.changes {
                    let Ok(path) = change.uri.to_file_path() else { continue };
                    if path.extension().is_none_or(|e| e != "journey") {
                        continue;
                    }
                    let disk = std::fs::read_to_string(&path).unwrap_or_default();
                    match self.by_uri.get(&change.uri) {
                        Some(&index) if !self.docs[index].open => self.docs[index].set_text(disk),
                        Some(_) => {}
                        None => {
                            self.add(&path, disk);
                        }
                    }
                }
                self.schedule();
            }
            _ => {}
        }
    }

    fn schedule(&mut self) {
        self.due = Some(Instant::now() + self.debounce);
    }

    fn request(&mut self, request: Request) -> Response {
        self.settle();
        let Request { id, method, params } = request;
        let result = match method.as_str() {
            request::HoverRequest::METHOD => answer(params, |p| features::hover(self, p)),
            request::GotoDefinition::METHOD => answer(params, |p| features::definition(self, p)),
            request::References::METHOD => answer(params, |p| features::references(self, p)),
            request::PrepareRenameRequest::METHOD => answer_fallible(params, |p| features::prepare_rename(self, p)),
            request::Rename::METHOD => answer_fallible(params, |p| features::rename(self, p)),
            request::Completion::METHOD => answer(params, |p| complete::completion(self, p)),
            request::DocumentSymbolRequest::METHOD => answer(params, |p| features::document_symbols(self, p)),
            request::WorkspaceSymbolRequest::METHOD => answer(params, |p| features::workspace_symbols(self, p)),
            request::Formatting::METHOD => answer(params, |p| features::formatting(self, p)),
            request::SemanticTokensFullRequest::METHOD => answer(params, |p| features::semantic_tokens(self, p)),
            request::InlayHintRequest::METHOD => answer(params, |p| features::inlay_hints(self, p)),
            request::CodeActionRequest::METHOD => answer(params, |p| features::code_actions(self, p)),
            _ => Err((
                lsp_server::ErrorCode::MethodNotFound as i32,
                format!("journeyc does not handle {method}"),
            )),
        };
        respond(id, result)
    }
}

type Answer = Result<serde_json::Value, (i32, String)>;

fn answer<P: serde::de::DeserializeOwned, R: serde::Serialize>(
    params: serde_json::Value,
    f: impl FnOnce(P) -> R,
) -> Answer {
    answer_fallible(params, |p| Ok(f(p)))
}

fn answer_fallible<P: serde::de::DeserializeOwned, R: serde::Serialize>(
    params: serde_json::Value,
    f: impl FnOnce(P) -> Result<R, String>,
) -> Answer {
    let params = serde_json::from_value(params)
        .map_err(|error| (lsp_server::ErrorCode::InvalidParams as i32, error.to_string()))?;
    let result = f(params).map_err(|message| (lsp_server::ErrorCode::RequestFailed as i32, message))?;
    serde_json::to_value(result).map_err(|error| (lsp_server::ErrorCode::InternalError as i32, error.to_string()))
}

fn respond(id: RequestId, result: Answer) -> Response {
    match result {
        Ok(value) => Response::new_ok(id, value),
        Err((code, message)) => Response::new_err(id, code, message),
    }
}

/// Every `.journey` file under a directory (hidden directories, `target`
/// and `node_modules` skipped).
fn collect(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "node_modules" {
                collect(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "journey") {
            found.push(path);
        }
    }
}
