//! Label rules: what a Prometheus label name and value may be, which names
//! Muster sets itself from host facts, and the `key=value` form the CLIs take.

use std::collections::BTreeMap;

/// A host's or token's labels. Sorted, so everything derived from them
/// (target files, rendered configs) is byte-stable.
pub type Labels = BTreeMap<String, String>;

/// Longest label name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Longest label value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 1024;
/// Most labels on one token or host.
pub const MAX_LABELS: usize = 64;

/// Label names Muster fills in from the host's facts; a token or an admin
/// cannot set them.
pub const FACT_LABELS: &[&str] = &["host_id", "hostname", "os", "arch"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelError {
    #[error("label name {0:?} is not a valid Prometheus label name (letters, digits and '_', not starting with a digit)")]
    BadName(String),
    #[error("label name {0:?} starts with \"__\", which Prometheus reserves for internal use")]
    ReservedPrefix(String),
    #[error("label name {0:?} is set by Muster from the host's facts and cannot be given")]
    FactLabel(String),
    #[error("label {name:?}: value is longer than {MAX_VALUE_LEN} bytes")]
    ValueTooLong { name: String },
    #[error("label {name:?}: value contains a control character (newline, tab, ...)")]
    ValueControl { name: String },
    #[error("label {name:?}: value is empty")]
    ValueEmpty { name: String },
    #[error("{0:?} is not of the form name=value")]
    NotPair(String),
    #[error("too many labels: at most {MAX_LABELS}")]
    TooMany,
}

/// Checks a label name against Prometheus's rule `[a-zA-Z_][a-zA-Z0-9_]*`,
/// refusing the `__` prefix Prometheus keeps for itself.
pub fn check_name(name: &str) -> Result<(), LabelError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok
        || name.len() > MAX_NAME_LEN
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(LabelError::BadName(name.to_string()));
    }
    if name.starts_with("__") {
        return Err(LabelError::ReservedPrefix(name.to_string()));
    }
    Ok(())
}

/// Checks a label value: non-empty, bounded, no control characters. Quotes,
/// braces and backslashes are allowed; every consumer escapes them.
pub fn check_value(name: &str, value: &str) -> Result<(), LabelError> {
    if value.is_empty() {
        return Err(LabelError::ValueEmpty { name: name.into() });
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(LabelError::ValueTooLong { name: name.into() });
    }
    if value.chars().any(char::is_control) {
        return Err(LabelError::ValueControl { name: name.into() });
    }
    Ok(())
}

/// Checks labels an operator gives (on a token or a host): valid names and
/// values, none of the names Muster derives from facts.
pub fn check_operator_labels(labels: &Labels) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooMany);
    }
    for (name, value) in labels {
        check_name(name)?;
        if FACT_LABELS.contains(&name.as_str()) {
            return Err(LabelError::FactLabel(name.clone()));
        }
        check_value(name, value)?;
    }
    Ok(())
}

/// Parses `name=value` as given on a command line. The value may contain `=`.
pub fn parse_pair(text: &str) -> Result<(String, String), LabelError> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| LabelError::NotPair(text.to_string()))?;
    let name = name.trim();
    check_name(name)?;
    check_value(name, value)?;
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_rules() {
        for ok in ["env", "_x", "rack_2", "A1"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a.b", "ä", "a b"] {
            assert!(matches!(check_name(bad), Err(LabelError::BadName(_))), "{bad}");
        }
        assert!(matches!(
            check_name("__metrics_path__"),
            Err(LabelError::ReservedPrefix(_))
        ));
    }

    #[test]
    fn values_allow_quotes_and_braces_but_not_control_characters() {
        assert_eq!(check_value("a", r#"x"}{\y"#), Ok(()));
        assert!(matches!(
            check_value("a", "x\ny"),
            Err(LabelError::ValueControl { .. })
        ));
        assert!(matches!(check_value("a", ""), Err(LabelError::ValueEmpty { .. })));
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        assert!(matches!(
            check_value("a", &long),
            Err(LabelError::ValueTooLong { .. })
        ));
    }

    #[test]
    fn operators_cannot_set_fact_labels() {
        let labels = Labels::from([("hostname".to_string(), "x".to_string())]);
        assert_eq!(
            check_operator_labels(&labels),
            Err(LabelError::FactLabel("hostname".into()))
        );
    }

    #[test]
    fn parses_pairs_with_equals_in_the_value() {
        assert_eq!(parse_pair("team=a=b"), Ok(("team".into(), "a=b".into())));
        assert!(matches!(parse_pair("team"), Err(LabelError::NotPair(_))));
    }
}
