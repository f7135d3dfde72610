//! Bulk customer import: the rows of a CSV or JSONL file become `identify`
//! calls, which then pass the same validation as every other call
//! ([`super::input::parse_received_call`]). `journeyc import-customers`
//! (offline, into a data directory) and the daemon's `POST /v1/import` both
//! read files through here.
//!
//! - **CSV**: a header row, then one customer per row. One column names the
//!   customer (`userId`, `user_id` or `id`); an optional `timestamp` column
//!   gives the time of the row's identify (else the time of the import);
//!   every other column is an attribute by its name on the wire (or a
//!   channel's subscription trait, `email_subscribe`). A cell is typed by
//!   the attribute's declared type (`42` for an `int`, `true`/`yes`/`1` for
//!   a `bool`); an empty cell leaves the attribute as it is.
//! - **JSONL**: one JSON object per line, either an identify call
//!   (`{"userId": …, "traits": {…}}`) or a flat row (`{"id": …, "plan": …}`)
//!   read like a CSV row, with its JSON values as they are.

use crate::check::{Schema, Type};
use serde_json::{json, Map, Value};

/// The columns that name the customer, in the order they are looked for.
pub const ID_COLUMNS: [&str; 3] = ["userId", "user_id", "id"];

/// A file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// By the file name: `.csv`, or `.jsonl`/`.ndjson`/`.json`.
    pub fn of_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            _ => None,
        }
    }

    /// By the content: JSONL starts with `{`, anything else is CSV.
    pub fn sniff(bytes: &[u8]) -> Format {
        let first = bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace() && **b != 0xEF && **b != 0xBB && **b != 0xBF);
        if first == Some(&b'{') {
            Format::Jsonl
        } else {
            Format::Csv
        }
    }
}

/// A file that cannot be read as customers at all (no id column, an
/// unknown column): nothing of it is imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FileError {
    pub field: String,
    pub reason: String,
}

/// One row as a call to validate, or why it is not even that.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based: the data row (CSV, after the header) or the line (JSONL).
    pub number: usize,
    pub call: Result<Value, RowError>,
}

/// A row that could not be turned into a call (a CSV row with the wrong
/// number of cells, a JSONL line that is not an object), with its text.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    pub field: String,
    pub reason: String,
    pub text: String,
}

/// Reads a CSV file's header and rows.
pub struct CsvRows<R: std::io::Read> {
    reader: csv::Reader<R>,
    columns: Vec<Column>,
    number: usize,
    /// An IO error ends the file.
    done: bool,
}

/// What a CSV column holds.
#[derive(Debug, Clone)]
enum Column {
    Id,
    Timestamp,
    /// An attribute, by its wire name, with its declared type (`None` for
    /// a subscription trait, which is a string).
    Trait(String, Option<Type>),
}

impl<R: std::io::Read> CsvRows<R> {
    /// Reads the header and checks every column against the schema.
    pub fn new(input: R, schema: &Schema) -> Result<CsvRows<R>, FileError> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
        let header = reader.headers().map_err(|e| FileError {
            field: "header".into(),
            reason: format!("cannot read the header row: {e}"),
        })?;
        let names: Vec<String> = header
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
            .collect();
        let columns = columns(&names, schema)?;
        Ok(CsvRows {
            reader,
            columns,
            number: 0,
            done: false,
        })
    }
}

impl<R: std::io::Read> Iterator for CsvRows<R> {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        if self.done {
            return None;
        }
        let mut record = csv::StringRecord::new();
        match self.reader.read_record(&mut record) {
            Ok(false) => None,
            Ok(true) => {
                self.number += 1;
                let text = record.iter().collect::<Vec<_>>().join(",");
                let call = if record.len() != self.columns.len() {
                    Err(RowError {
                        field: "row".into(),
                        reason: format!("{} cells; the header has {} columns", record.len(), self.columns.len()),
                        text,
                    })
                } else {
                    Ok(csv_call(&self.columns, &record))
                };
                Some(Row {
                    number: self.number,
                    call,
                })
            }
            Err(error) => {
                self.number += 1;
                // A row that is not UTF-8 is refused and reading goes on;
                // an IO error ends the file, and this row says so.
                self.done = matches!(error.kind(), csv::ErrorKind::Io(_));
                Some(Row {
                    number: self.number,
                    call: Err(RowError {
                        field: "row".into(),
                        reason: format!("not CSV: {error}"),
                        text: String::new(),
                    }),
                })
            }
        }
    }
}

fn columns(names: &[String], schema: &Schema) -> Result<Vec<Column>, FileError> {
    let wire = schema.field_names(None);
    let mut columns = Vec::with_capacity(names.len());
    let mut id_seen = false;
    for name in names {
        let column = if ID_COLUMNS.contains(&name.as_str()) {
            if id_seen {
                return Err(FileError {
                    field: format!("header.{name}"),
                    reason: format!(
                        "a second id column; name the customer in one of {}",
                        ID_COLUMNS.join(", ")
                    ),
                });
            }
            id_seen = true;
            Column::Id
        } else if name == "timestamp" {
            Column::Timestamp
        } else if let Some(declared) = wire.identifier(name).and_then(|id| schema.customer.get(id)) {
            Column::Trait(name.clone(), Some(declared.ty.clone()))
        } else if super::input::subscribe_trait_channel(name).is_some() {
            Column::Trait(name.clone(), None)
        } else {
            let known: Vec<&str> = schema.customer.keys().map(|id| wire.wire(id)).collect();
            let mut reason = "not an attribute declared in the schema".to_string();
            if let Some(best) = crate::diagnostic::did_you_mean(name, known) {
                reason.push_str(&format!(" (did you mean `{best}`?)"));
            }
            return Err(FileError {
                field: format!("header.{name}"),
                reason,
            });
        };
        columns.push(column);
    }
    if !id_seen {
        return Err(FileError {
            field: "header".into(),
            reason: format!(
                "no id column: name the customer in a column called {}",
                ID_COLUMNS.join(", ")
            ),
        });
    }
    Ok(columns)
}

/// A CSV row as an identify call.
fn csv_call(columns: &[Column], record: &csv::StringRecord) -> Value {
    let mut call = Map::new();
    call.insert("type".into(), json!("identify"));
    let mut traits = Map::new();
    for (column, cell) in columns.iter().zip(record.iter()) {
        match column {
            Column::Id => {
                call.insert("userId".into(), json!(cell.trim()));
            }
            Column::Timestamp if !cell.trim().is_empty() => {
                call.insert("timestamp".into(), json!(cell.trim()));
            }
            Column::Timestamp => {}
            Column::Trait(_, _) if cell.is_empty() => {}
            Column::Trait(name, ty) => {
                traits.insert(name.clone(), typed_cell(cell, ty.as_ref()));
            }
        }
    }
    call.insert("traits".into(), Value::Object(traits));
    Value::Object(call)
}

/// A cell as the JSON value its declared type reads; a cell that does not
/// parse stays a string, and validation names the mismatch.
fn typed_cell(cell: &str, ty: Option<&Type>) -> Value {
    let trimmed = cell.trim();
    match ty {
        Some(Type::Int) => trimmed.parse::<i64>().map_or_else(|_| json!(cell), |i| json!(i)),
        Some(Type::Number | Type::Duration) => match trimmed.parse::<f64>() {
            Ok(n) if n.is_finite() => json!(n),
            _ => json!(cell),
        },
        Some(Type::Bool) => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => json!(true),
            "false" | "no" | "0" => json!(false),
            _ => json!(cell),
        },
        _ => json!(cell),
    }
}

/// A JSONL line as an identify call.
pub fn jsonl_call(line: &str) -> Result<Value, RowError> {
    let refuse = |field: &str, reason: String| RowError {
        field: field.into(),
        reason,
        text: line.to_string(),
    };
    let value: Value = serde_json::from_str(line).map_err(|e| refuse("row", format!("not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(refuse("row", "expected a JSON object".into()));
    };
    let shaped_as_call = object.contains_key("traits") || object.contains_key("type");
    if shaped_as_call {
        match object.get("type").and_then(Value::as_str) {
            None => {
                object.insert("type".into(), json!("identify"));
            }
            Some("identify") => {}
            Some(other) => {
                return Err(refuse(
                    "type",
                    format!("`{other}`: an import holds identify calls only"),
                ))
            }
        }
        return Ok(Value::Object(object));
    }
    let mut call = Map::new();
    call.insert("type".into(), json!("identify"));
    let id = ID_COLUMNS.iter().find_map(|name| object.remove(*name));
    let Some(id) = id else {
        return Err(refuse(
            "userId",
            format!("missing: name the customer in {}", ID_COLUMNS.join(", ")),
        ));
    };
    call.insert("userId".into(), id);
    if let Some(timestamp) = object.remove("timestamp") {
        call.insert("timestamp".into(), timestamp);
    }
    call.insert("traits".into(), Value::Object(object));
    Ok(Value::Object(call))
}

/// The rows of a JSONL file, read a line at a time: blank lines are
/// skipped, numbers are line numbers.
pub fn jsonl_rows(reader: impl std::io::BufRead) -> impl Iterator<Item = Row> {
    reader
        .lines()
        .enumerate()
        .filter(|(_, line)| line.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(index, line)| Row {
            number: index + 1,
            call: match line {
                Ok(line) => jsonl_call(&line),
                Err(error) => Err(RowError {
                    field: "row".into(),
                    reason: format!("cannot be read: {error}"),
                    text: String::new(),
                }),
            },
        })
}

/// Every row of a whole file held in memory (an HTTP body).
pub fn rows(format: Format, bytes: &[u8], schema: &Schema) -> Result<Vec<Row>, FileError> {
    match format {
        Format::Csv => Ok(CsvRows::new(bytes, schema)?.collect()),
        Format::Jsonl => {
            let text = std::str::from_utf8(bytes).map_err(|e| FileError {
                field: "body".into(),
                reason: format!("not UTF-8: {e}"),
            })?;
            Ok(jsonl_rows(text.as_bytes()).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::FieldType;

    fn schema() -> Schema {
        let mut schema = Schema::default();
        let field = |ty: Type, optional: bool| FieldType { ty, optional };
        schema.customer.insert(
            "plan".into(),
            field(Type::Enum(vec!["free".into(), "pro".into()]), false),
        );
        schema.customer.insert("age".into(), field(Type::Int, true));
        schema.customer.insert("vip".into(), field(Type::Bool, true));
        schema.customer.insert("first_name".into(), field(Type::String, true));
        schema.wire.customer.insert("firstName".into(), "first_name".into());
        schema
    }

    #[test]
    fn csv_rows_become_typed_identify_calls() {
        let file = "userId,plan,age,vip,firstName,email_subscribe\nu1,pro,42,yes,Ada,unsubscribed\nu2,free,,0,,\nu3,pro,old,maybe,Bob\n";
        let rows: Vec<Row> = CsvRows::new(file.as_bytes(), &schema()).expect("header").collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0].call,
            Ok(json!({"type": "identify", "userId": "u1", "traits": {
                "plan": "pro", "age": 42, "vip": true, "firstName": "Ada", "email_subscribe": "unsubscribed"}}))
        );
        // Empty cells leave the attribute alone.
        assert_eq!(
            rows[1].call,
            Ok(json!({"type": "identify", "userId": "u2", "traits": {"plan": "free", "vip": false}}))
        );
        // Cells that do not parse stay strings (validation refuses them); a
        // short row is refused here.
        let short = rows[2].call.as_ref().expect_err("short row");
        assert_eq!((short.field.as_str(), rows[2].number), ("row", 3));
        assert!(short.reason.contains("5 cells; the header has 6"), "{}", short.reason);
    }

    #[test]
    fn csv_headers_are_checked() {
        let error = |header: &str| CsvRows::new(header.as_bytes(), &schema()).err().expect("refused");
        let unknown = error("id,plann\n");
        assert_eq!(unknown.field, "header.plann");
        assert!(unknown.reason.contains("did you mean `plan`"), "{}", unknown.reason);
        assert!(error("plan,age\n").reason.contains("no id column"));
        assert!(error("id,userId\n").reason.contains("second id column"));
        // The identifier of an attribute with a wire name is not its name on the wire.
        assert_eq!(error("id,first_name\n").field, "header.first_name");
    }

    #[test]
    fn jsonl_lines_are_calls_or_flat_rows() {
        assert_eq!(
            jsonl_call(r#"{"id": "u1", "plan": "pro", "timestamp": "2026-01-01T00:00:00Z"}"#),
            Ok(
                json!({"type": "identify", "userId": "u1", "timestamp": "2026-01-01T00:00:00Z", "traits": {"plan": "pro"}})
            )
        );
        assert_eq!(
            jsonl_call(r#"{"userId": "u1", "traits": {"plan": "pro"}}"#),
            Ok(json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}))
        );
        assert_eq!(
            jsonl_call(r#"{"type": "track", "userId": "u1"}"#)
                .expect_err("track")
                .field,
            "type"
        );
        assert_eq!(jsonl_call(r#"{"plan": "pro"}"#).expect_err("no id").field, "userId");
        assert_eq!(jsonl_call("[1]").expect_err("array").field, "row");
        assert_eq!(Format::sniff(b"  {\"id\":1}"), Format::Jsonl);
        assert_eq!(Format::sniff(b"id,plan"), Format::Csv);
    }
}
