//! Putting a render together: the templates' outputs joined into one
//! config, their target groups merged (a scrape declared twice is an error),
//! and the result checked by the shared Alloy syntax checker, with a failure
//! traced back to the template whose output holds it.

use std::collections::BTreeSet;

use muster_shared::alloy;
use ring::digest::{digest, SHA256};

use super::{RenderError, Rendered, TargetGroup};
use crate::tokens::hex;

/// One template's output.
pub(super) struct Part {
    pub(super) name: String,
    pub(super) text: String,
    pub(super) targets: Vec<TargetGroup>,
}

/// Joins the parts (a blank line between, empty ones left out), merges and
/// checks their target groups, and checks the syntax of the whole.
pub(super) fn assemble(host_id: &str, parts: Vec<Part>) -> Result<Rendered, RenderError> {
    let mut config = String::new();
    let mut targets: Vec<(TargetGroup, String)> = Vec::new();
    // (first line in the config, template name) of each part.
    let mut spans: Vec<(usize, String)> = Vec::new();
    for part in parts {
        for group in part.targets {
            if let Some((_, first)) = targets.iter().find(|(g, _)| g.key() == group.key()) {
                return Err(RenderError::Duplicate {
                    name: part.name.clone(),
                    host_id: host_id.to_string(),
                    key: group.key(),
                    first: first.clone(),
                });
            }
            targets.push((group, part.name.clone()));
        }
        let text = part.text.trim_end();
        if text.trim().is_empty() {
            continue;
        }
        if !config.is_empty() {
            config.push('\n');
        }
        spans.push((config.matches('\n').count() + 1, part.name));
        config.push_str(text);
        config.push('\n');
    }
    if targets.is_empty() {
        return Err(RenderError::NoTargets {
            host_id: host_id.to_string(),
        });
    }
    check_syntax(host_id, &config, &spans)?;
    let hash = hex(digest(&SHA256, config.as_bytes()).as_ref());
    Ok(Rendered {
        config,
        hash,
        targets: targets.into_iter().map(|(g, _)| g).collect(),
    })
}

/// The syntax check every rendered config passes before it is stored or
/// shipped. A failure names the template whose output holds the first
/// error, with the line within that output.
fn check_syntax(host_id: &str, config: &str, spans: &[(usize, String)]) -> Result<(), RenderError> {
    let Some((line, col, message)) = first_syntax_error(config) else {
        return Ok(());
    };
    let (start, name) = spans
        .iter()
        .rev()
        .find(|(start, _)| *start <= line)
        .cloned()
        .unwrap_or((1, "(config)".into()));
    Err(RenderError::Syntax {
        name,
        host_id: host_id.to_string(),
        line: line - start + 1,
        col,
        message,
        config_line: line,
    })
}

/// (line, column, message) of the first syntax error in `config` (the
/// shared Alloy syntax checker: the same check `muster-server alloy check`
/// runs), or a second block with the same name and label, which Alloy
/// refuses to load.
fn first_syntax_error(config: &str) -> Option<(usize, usize, String)> {
    let file = match alloy::parse(config) {
        Ok(file) => file,
        Err(diags) => {
            return diags.first().map(|d| (d.line, d.col, d.message.clone()));
        }
    };
    let mut seen = BTreeSet::new();
    for stmt in &file.body {
        if let alloy::ast::Stmt::Block {
            name,
            label,
            name_offset,
            ..
        } = stmt
        {
            let id = (name.join("."), label.clone());
            if !seen.insert(id.clone()) {
                let line = config[..*name_offset].matches('\n').count() + 1;
                let col = name_offset - config[..*name_offset].rfind('\n').map_or(0, |i| i + 1) + 1;
                let label = id.1.map(|l| format!(" {l:?}")).unwrap_or_default();
                return Some((line, col, format!("block {}{label} is defined twice", id.0)));
            }
        }
    }
    None
}
