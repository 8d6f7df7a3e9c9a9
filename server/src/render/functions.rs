//! The functions and formatter templates render with: `exporter()` and
//! `standalone()` declare the Prometheus target groups of a render, and every
//! `{{ value }}` is written as an Alloy literal.

use std::fmt::Write as _;
use std::sync::Mutex;

use minijinja::value::{Kwargs, Object, Value, ValueKind};
use minijinja::{Error, ErrorKind, Output, State};
use muster_shared::alloy::escape_string;

use super::TargetGroup;

pub(super) const TARGETS: &str = "muster.targets";

/// Target groups declared during one render.
#[derive(Debug, Default)]
pub(super) struct Declared(Mutex<Vec<TargetGroup>>);

impl Declared {
    pub(super) fn take(&self) -> Vec<TargetGroup> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Object for Declared {}

fn ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Adds a group to the render's declared targets, refusing a second
/// declaration of the same scrape.
fn declare(state: &State, group: TargetGroup) -> Result<(), Error> {
    let declared = state.get_or_set_temp_object(TARGETS, Declared::default);
    let mut groups = declared.0.lock().unwrap_or_else(|p| p.into_inner());
    if groups.iter().any(|g| g.key() == group.key()) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{} declared twice", group.key()),
        ));
    }
    groups.push(group);
    Ok(())
}

/// `exporter(kind, label, service=none)`: writes the block header
/// `prometheus.exporter.<kind> "<label>"` and declares its target group
/// (scraped through Alloy's component metrics path).
pub(super) fn exporter(
    state: &State,
    kind: String,
    label: String,
    service: Option<String>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let service = match service {
        Some(s) => Some(s),
        None => kwargs.get::<Option<String>>("service")?,
    };
    kwargs.assert_all_used()?;
    if !ident(&kind) || !ident(&label) || !service.as_deref().is_none_or(ident) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("exporter({kind:?}, {label:?}, {service:?}): kind, label and service must be lowercase identifiers"),
        ));
    }
    declare(
        state,
        TargetGroup {
            component: format!("prometheus.exporter.{kind}.{label}"),
            port: None,
            path: None,
            service,
        },
    )?;
    Ok(Value::from_safe_string(format!(
        "prometheus.exporter.{kind} \"{label}\""
    )))
}

/// `standalone(service, port, path="/metrics")`: for a service Alloy has no
/// exporter for. Declares a target group for the standalone exporter on the
/// host's `port` and writes a comment saying so (nothing runs in Alloy).
pub(super) fn standalone(
    state: &State,
    service: String,
    port: u16,
    path: Option<String>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let path = match path {
        Some(p) => Some(p),
        None => kwargs.get::<Option<String>>("path")?,
    };
    kwargs.assert_all_used()?;
    let path = path.unwrap_or_else(|| "/metrics".into());
    let path_ok =
        path.starts_with('/') && path.len() <= 256 && path.chars().all(|c| c.is_ascii_graphic());
    if !ident(&service) || port == 0 || !path_ok {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("standalone({service:?}, {port}, {path:?}): service must be a lowercase identifier, port 1 to 65535, path an absolute URL path"),
        ));
    }
    let comment = format!(
        "// {service}: Prometheus scrapes the standalone exporter on this host's port {port} at {path}."
    );
    declare(
        state,
        TargetGroup {
            component: String::new(),
            port: Some(port),
            path: (path != "/metrics").then_some(path),
            service: Some(service),
        },
    )?;
    Ok(Value::from_safe_string(comment))
}

/// Writes values as Alloy literals unless marked safe.
pub(super) fn alloy_formatter(
    out: &mut Output,
    _state: &State,
    value: &Value,
) -> Result<(), Error> {
    let mut text = String::new();
    if value.is_safe() {
        write!(text, "{value}").map_err(Error::from)?;
    } else {
        write_literal(&mut text, value)?;
    }
    out.write_str(&text).map_err(Error::from)
}

fn write_literal(out: &mut String, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::UndefinedError,
                "an undefined value cannot be written into a config",
            ))
        }
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool | ValueKind::Number => write!(out, "{value}").map_err(Error::from)?,
        ValueKind::String => out.push_str(&escape_string(value.as_str().unwrap_or_default())),
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter()?.enumerate() {
                out.push_str(if i == 0 { " " } else { ", " });
                out.push_str(&escape_string(&key.to_string()));
                out.push_str(" = ");
                write_literal(out, &value.get_item(&key)?)?;
            }
            out.push_str(" }");
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_literal(out, &item)?;
            }
            out.push(']');
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("a {} value cannot be written into a config", value.kind()),
            ))
        }
    }
    Ok(())
}
