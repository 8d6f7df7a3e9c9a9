//! Batch import files (CSV with a header, or JSON) and what a batch row's
//! state is: pure functions over text and records, no IO.
//!
//! CSV: the header names the columns. `hostname` is required, `address`
//! (where the host is expected to be) is optional, every other column is a
//! label name; an empty cell leaves that label unset. Blank lines and lines
//! starting with `#` are skipped. JSON: an array of
//! `{"hostname": ..., "labels": {...}, "address": ...}`.

use std::collections::BTreeMap;

use muster_shared::facts;
use muster_shared::labels::{self, Labels};
use serde::Deserialize;

pub use crate::admin_wire::{EntryStatus, Format, RowError};
use crate::admin_wire::{HostState, TokenState};
use crate::schema::LabelSchema;
use crate::store::{headline, BatchEntry, NewBatchHost};

/// Most rows one import may hold.
pub const MAX_ROWS: usize = 10_000;
/// Longest expected address.
const MAX_ADDRESS_LEN: usize = 255;

/// A row as read from the file, before validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRow {
    pub line: usize,
    pub hostname: String,
    pub labels: Labels,
    pub address: Option<String>,
}

fn file_error(line: usize, message: impl Into<String>) -> Vec<RowError> {
    vec![RowError {
        line,
        hostname: None,
        message: message.into(),
    }]
}

/// Reads the rows of an import file. A file-level problem (no header, bad
/// JSON, too many rows) is the only error; row problems come from
/// [`validate`].
pub fn parse(format: Format, text: &str) -> Result<Vec<RawRow>, Vec<RowError>> {
    let rows = match format {
        Format::Csv => parse_csv(text)?,
        Format::Json => parse_json(text)?,
    };
    if rows.is_empty() {
        return Err(file_error(0, "the file has no hosts"));
    }
    if rows.len() > MAX_ROWS {
        return Err(file_error(
            0,
            format!(
                "the file has {} hosts; at most {MAX_ROWS} per batch",
                rows.len()
            ),
        ));
    }
    Ok(rows)
}

/// Splits one CSV line into fields (RFC 4180 quoting: `"a,b"`, `""` for a
/// quote; spaces around fields are dropped). A quoted field cannot span
/// lines.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field is not closed on its line".into()),
                }
            }
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim().to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(
                            "a quote inside an unquoted field (quote the whole field)".into()
                        )
                    }
                    Some(c) => field.push(c),
                }
            }
            fields.push(field.trim().to_string());
            continue;
        }
        fields.push(field);
    }
}

fn parse_csv(text: &str) -> Result<Vec<RawRow>, Vec<RowError>> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((header_line, header)) = lines.next() else {
        return Err(file_error(0, "the file is empty"));
    };
    let columns = csv_fields(header).map_err(|e| file_error(header_line, e))?;
    let columns: Vec<String> = columns.iter().map(|c| c.trim().to_string()).collect();
    let mut errors = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].contains(c) {
            errors.push(format!("column {c:?} appears twice"));
        } else if c != "hostname" && c != "address" {
            if let Err(e) = labels::check_name(c) {
                errors.push(format!("column {c:?}: {e}"));
            }
        }
    }
    if !columns.iter().any(|c| c == "hostname") {
        errors.push(format!(
            "the header has no \"hostname\" column (columns: {})",
            columns.join(", ")
        ));
    }
    if !errors.is_empty() {
        return Err(file_error(header_line, errors.join("; ")));
    }
    let mut rows = Vec::new();
    let mut row_errors = Vec::new();
    for (line, text) in lines {
        let fields = match csv_fields(text) {
            Ok(f) if f.len() == columns.len() => f,
            Ok(f) => {
                row_errors.push(RowError {
                    line,
                    hostname: None,
                    message: format!(
                        "{} fields, but the header has {} columns",
                        f.len(),
                        columns.len()
                    ),
                });
                continue;
            }
            Err(e) => {
                row_errors.push(RowError {
                    line,
                    hostname: None,
                    message: e,
                });
                continue;
            }
        };
        let mut row = RawRow {
            line,
            hostname: String::new(),
            labels: Labels::new(),
            address: None,
        };
        for (column, value) in columns.iter().zip(fields) {
            match column.as_str() {
                "hostname" => row.hostname = value,
                "address" => row.address = Some(value).filter(|v| !v.is_empty()),
                name if !value.is_empty() => {
                    row.labels.insert(name.to_string(), value);
                }
                _ => {}
            }
        }
        rows.push(row);
    }
    if row_errors.is_empty() {
        Ok(rows)
    } else {
        // Rows that cannot even be read make the file unreadable as a whole.
        Err(row_errors)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    hostname: String,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    address: Option<String>,
}

fn parse_json(text: &str) -> Result<Vec<RawRow>, Vec<RowError>> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let entries: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(text).map_err(|e| {
            file_error(
                e.line(),
                format!("not a JSON array of hosts: {e} (expected [{{\"hostname\": ..., \"labels\": {{...}}}}, ...])"),
            )
        })?;
    let mut rows = Vec::with_capacity(entries.len());
    let mut errors = Vec::new();
    for raw in entries {
        // The raw value borrows from `text`: its offset gives its line.
        let offset = raw.get().as_ptr() as usize - text.as_ptr() as usize;
        let line = line_of(offset);
        match serde_json::from_str::<JsonRow>(raw.get()) {
            Ok(r) => rows.push(RawRow {
                line,
                hostname: r.hostname,
                labels: r.labels,
                address: r.address.filter(|a| !a.is_empty()),
            }),
            Err(e) => errors.push(RowError {
                line,
                hostname: None,
                message: format!("not a host entry: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// An expected address: a host name or IP, optionally with a port.
fn check_address(address: &str) -> Result<(), String> {
    let ok = !address.is_empty()
        && address.len() <= MAX_ADDRESS_LEN
        && address
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "address {address:?} is not a host name or IP address (with an optional :port)"
        ))
    }
}

/// Rows that passed and rows that did not.
#[derive(Debug, Default)]
pub struct Validated {
    pub rows: Vec<NewBatchHost>,
    pub errors: Vec<RowError>,
}

/// Checks every row: hostname, address, labels against the schema (defaults
/// filled in), duplicates within the file, and hostnames already taken
/// (`taken`: lowercased hostname → what holds it).
pub fn validate(
    rows: Vec<RawRow>,
    schema: &LabelSchema,
    taken: &BTreeMap<String, String>,
) -> Validated {
    let mut out = Validated::default();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows {
        let mut problems = Vec::new();
        if let Err(e) = facts::check_hostname(&row.hostname) {
            problems.push(e.to_string());
        }
        let key = row.hostname.to_ascii_lowercase();
        if let Some(first) = seen.get(&key) {
            problems.push(format!("hostname is already on line {first}"));
        } else if let Some(holder) = taken.get(&key) {
            problems.push(format!("hostname is {holder}"));
        }
        if let Some(a) = &row.address {
            if let Err(e) = check_address(a) {
                problems.push(e);
            }
        }
        let labels = match schema.check(&row.labels) {
            Ok(full) => Some(full),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        seen.entry(key).or_insert(row.line);
        match labels {
            Some(labels) if problems.is_empty() => out.rows.push(NewBatchHost {
                line: row.line,
                hostname: row.hostname,
                labels,
                address: row.address,
            }),
            _ => out.errors.push(RowError {
                line: row.line,
                hostname: Some(row.hostname).filter(|h| !h.is_empty()),
                message: problems.join("; "),
            }),
        }
    }
    out
}

/// Whether a host claiming `claimed` may use a token bound to `bound`:
/// equal ignoring case, or equal in the first DNS label when one of the two
/// is a short name (`web-01` and `web-01.example.com`).
pub fn hostname_matches(bound: &str, claimed: &str) -> bool {
    if bound.eq_ignore_ascii_case(claimed) {
        return true;
    }
    let short = |s: &str| s.split('.').next().unwrap_or(s).to_string();
    let (b_short, c_short) = (!bound.contains('.'), !claimed.contains('.'));
    (b_short || c_short) && short(bound).eq_ignore_ascii_case(&short(claimed))
}

/// The state of one row at `now`.
pub fn entry_status(entry: &BatchEntry, now: i64, stale_after: i64) -> EntryStatus {
    let base = EntryStatus {
        line: entry.line,
        hostname: entry.hostname.clone(),
        state: HostState::Pending,
        host_id: None,
        problem: None,
        retryable: false,
        labels: entry.labels.clone(),
        address: entry.address.clone(),
        config_current: false,
    };
    let Some(host) = &entry.host else {
        let problem = match (entry.token_state, &entry.last_error) {
            (TokenState::Expired, _) => Some("the token expired before the host enrolled".into()),
            (TokenState::Revoked, _) => Some("the token was revoked".into()),
            (_, Some(e)) => Some(format!("enrollment refused: {e}")),
            _ => None,
        };
        return EntryStatus {
            retryable: problem.is_some(),
            problem,
            ..base
        };
    };
    let state = headline(host, now, stale_after);
    let problem = match state {
        HostState::ConfigFailed => Some(
            host.last_error
                .clone()
                .unwrap_or_else(|| "the agent reported a failure".into()),
        ),
        HostState::ScrapeFailing => Some(
            host.lifecycle
                .scrape
                .as_ref()
                .and_then(|s| s.error.clone())
                .unwrap_or_else(|| "a target is down".into()),
        ),
        HostState::Stale => Some("the agent stopped checking in".into()),
        _ => None,
    };
    EntryStatus {
        state,
        host_id: Some(host.id.clone()),
        problem,
        config_current: host.applied_hash.as_deref() == Some(host.rendered_hash.as_str()),
        ..base
    }
}

/// Counts per state (by its wire name), plus `failed` for rows with a problem.
pub fn totals(entries: &[EntryStatus]) -> BTreeMap<String, usize> {
    let mut totals = BTreeMap::new();
    for e in entries {
        *totals.entry(e.state.as_str().to_string()).or_insert(0) += 1;
        if e.problem.is_some() {
            *totals.entry("failed".to_string()).or_insert(0) += 1;
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::SchemaSpec;

    fn schema() -> LabelSchema {
        let spec: SchemaSpec = toml::from_str(
            "required = [\"environment\"]\nallowed = [\"maintainers\", \"location\"]\n\
             [rules.environment]\nvalues = [\"production\", \"staging\"]\n",
        )
        .expect("spec");
        LabelSchema::compile(&spec).expect("schema")
    }

    #[test]
    fn csv_fields_follow_rfc4180_quoting() {
        assert_eq!(
            csv_fields(r#"a, "b,c" ,"say ""hi""","#).expect("fields"),
            vec!["a", "b,c", "say \"hi\"", ""]
        );
        assert_eq!(
            csv_fields(r#""a"x,b"#).unwrap_err(),
            "unexpected 'x' after a quoted field"
        );
        assert!(csv_fields("a,\"open").is_err());
        assert!(csv_fields("a,b\"c").is_err());
    }

    #[test]
    fn csv_rows_keep_their_line_numbers_and_skip_comments() {
        let text = "# fleet\nhostname,environment,address,location\n\n\
                    web-01,production,10.0.0.1,rack-1\r\nweb-02,staging,,\n";
        let rows = parse(Format::Csv, text).expect("parses");
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].line, rows[0].hostname.as_str()), (4, "web-01"));
        assert_eq!(rows[0].address.as_deref(), Some("10.0.0.1"));
        assert_eq!(rows[0].labels["location"], "rack-1");
        assert_eq!(rows[1].line, 5);
        assert_eq!(rows[1].labels.len(), 1, "empty cells set nothing");
        assert_eq!(rows[1].address, None);
    }

    #[test]
    fn csv_header_and_shape_problems_name_their_line() {
        let err = parse(Format::Csv, "name,env\nx,y\n").expect_err("no hostname");
        assert_eq!(err[0].line, 1);
        assert!(err[0].message.contains("no \"hostname\" column"), "{err:?}");
        let err = parse(Format::Csv, "hostname,a-b\nx,y\n").expect_err("bad column");
        assert!(err[0].message.contains("a-b"), "{err:?}");
        let err = parse(Format::Csv, "hostname,env\nx,y\nz\n").expect_err("short row");
        assert_eq!(err[0].line, 3);
        assert!(parse(Format::Csv, "hostname\n").is_err(), "no rows");
    }

    #[test]
    fn json_rows_carry_the_line_they_start_on() {
        let text = "[\n  {\"hostname\": \"a\", \"labels\": {\"environment\": \"staging\"}},\n\n  {\"hostname\": \"b\",\n   \"address\": \"10.0.0.2:12345\"}\n]";
        let rows = parse(Format::Json, text).expect("parses");
        assert_eq!((rows[0].line, rows[1].line), (2, 4));
        assert_eq!(rows[1].address.as_deref(), Some("10.0.0.2:12345"));
        let err = parse(
            Format::Json,
            "[\n{\"hostname\": \"a\"},\n{\"host\": \"b\"}\n]",
        )
        .expect_err("unknown field");
        assert_eq!(err[0].line, 3);
        assert!(err[0].message.contains("host"), "{err:?}");
        let err = parse(Format::Json, "[\n{\"hostname\": \"a\"},\n").expect_err("broken");
        assert!(err[0].message.contains("not a JSON array"), "{err:?}");
        assert_eq!(Format::sniff("  [{}]"), Format::Json);
        assert_eq!(Format::sniff("hostname\n"), Format::Csv);
    }

    #[test]
    fn validation_reports_every_bad_row_with_its_line() {
        let text = "hostname,environment,maintainer\n\
                    web-01,production,\n\
                    web-02,prod,\n\
                    web-01,staging,\n\
                    bad/host,staging,\n\
                    web-03,staging,ops\n\
                    taken,staging,\n";
        let taken = BTreeMap::from([(
            "taken".to_string(),
            "already enrolled as host taken-1".to_string(),
        )]);
        let v = validate(parse(Format::Csv, text).expect("parses"), &schema(), &taken);
        assert_eq!(v.rows.len(), 1);
        assert_eq!(v.rows[0].hostname, "web-01");
        let by_line: BTreeMap<usize, &str> = v
            .errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        assert!(
            by_line[&3].contains("labels.rules.environment.values"),
            "{by_line:?}"
        );
        assert!(by_line[&4].contains("already on line 2"), "{by_line:?}");
        assert!(by_line[&5].contains("hostname"), "{by_line:?}");
        assert!(
            by_line[&6].contains("did you mean \"maintainers\"?"),
            "{by_line:?}"
        );
        assert!(
            by_line[&7].contains("already enrolled as host taken-1"),
            "{by_line:?}"
        );
    }

    #[test]
    fn defaults_and_schema_apply_to_rows() {
        let spec: SchemaSpec =
            toml::from_str("[defaults]\nenvironment = \"production\"\n").expect("spec");
        let schema = LabelSchema::compile(&spec).expect("schema");
        let rows = parse(Format::Csv, "hostname\nweb-01\n").expect("parses");
        let v = validate(rows, &schema, &BTreeMap::new());
        assert_eq!(v.rows[0].labels["environment"], "production");
    }

    #[test]
    fn bound_hostnames_match_short_and_long_forms_only() {
        assert!(hostname_matches("web-01", "WEB-01"));
        assert!(hostname_matches("web-01", "web-01.example.com"));
        assert!(hostname_matches("web-01.example.com", "web-01"));
        assert!(!hostname_matches("web-01.a.com", "web-01.b.com"));
        assert!(!hostname_matches("web-01", "web-02"));
        assert!(!hostname_matches("web", "web-01"));
    }
}
