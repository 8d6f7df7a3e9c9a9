//! Label rules: what a Prometheus label name and value may be, which names
//! Muster sets itself from host facts, the `key=value` form the CLIs take,
//! label selectors (`environment=production,location=rack-2`), and the
//! "did you mean" suggestion for a misspelt name.

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

/// Label names Prometheus or Muster's target groups set on every series
/// (`job` and `instance` by Prometheus, `service` by each target group);
/// a token, batch row, host or admin cannot set them.
pub const TARGET_LABELS: &[&str] = &["job", "instance", "service"];

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelError {
    #[error("label name {0:?} is not a valid Prometheus label name (letters, digits and '_', not starting with a digit)")]
    BadName(String),
    #[error("label name {0:?} starts with \"__\", which Prometheus reserves for internal use")]
    ReservedPrefix(String),
    #[error("label name {0:?} is set by Muster from the host's facts and cannot be given")]
    FactLabel(String),
    #[error("label name {0:?} is set on every target by Prometheus or Muster and cannot be given")]
    TargetLabel(String),
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
    #[error("selector {0:?} is empty; give name=value[,name=value...]")]
    EmptySelector(String),
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

/// Checks a name an operator or host may set: a valid name, neither `__*`
/// nor a fact label nor a target label.
pub fn check_settable(name: &str) -> Result<(), LabelError> {
    check_name(name)?;
    if FACT_LABELS.contains(&name) {
        return Err(LabelError::FactLabel(name.to_string()));
    }
    if TARGET_LABELS.contains(&name) {
        return Err(LabelError::TargetLabel(name.to_string()));
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
        check_settable(name)?;
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

/// A label selector: every pair must match (equality only).
pub type Selector = Labels;

/// Parses `name=value[,name=value...]`. Values cannot contain `,` here; a
/// selector names the labels operators filter by, which are plain words.
pub fn parse_selector(text: &str) -> Result<Selector, LabelError> {
    let mut selector = Selector::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = parse_pair(part)?;
        selector.insert(name, value);
    }
    if selector.is_empty() {
        return Err(LabelError::EmptySelector(text.to_string()));
    }
    Ok(selector)
}

/// Whether `labels` carries every pair of `selector`.
pub fn matches(selector: &Selector, labels: &Labels) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
}

/// The candidate nearest to `name` by edit distance, when it is near enough
/// to be a plausible typo (at most a third of the name's length, and at most
/// 3 edits). Ties go to the first candidate in iteration order.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| {
            (
                edit_distance(&name.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
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
            assert!(
                matches!(check_name(bad), Err(LabelError::BadName(_))),
                "{bad}"
            );
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
        assert!(matches!(
            check_value("a", ""),
            Err(LabelError::ValueEmpty { .. })
        ));
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

    #[test]
    fn selectors_parse_and_match_every_pair() {
        let s = parse_selector("environment=production, location=rack-2").expect("parses");
        assert_eq!(s.len(), 2);
        let mut labels = Labels::from([
            ("environment".to_string(), "production".to_string()),
            ("location".to_string(), "rack-2".to_string()),
            ("team".to_string(), "db".to_string()),
        ]);
        assert!(matches(&s, &labels));
        labels.insert("location".into(), "rack-3".into());
        assert!(!matches(&s, &labels));
        assert!(matches!(
            parse_selector(" , "),
            Err(LabelError::EmptySelector(_))
        ));
        assert!(matches!(parse_selector("env"), Err(LabelError::NotPair(_))));
        assert!(matches!(
            parse_selector("a-b=1"),
            Err(LabelError::BadName(_))
        ));
    }

    #[test]
    fn near_names_are_suggested_and_far_ones_are_not() {
        let allowed = ["maintainers", "environment", "location"];
        assert_eq!(suggest("maintainer", allowed), Some("maintainers"));
        assert_eq!(suggest("enviroment", allowed), Some("environment"));
        assert_eq!(suggest("Location", allowed), Some("location"));
        assert_eq!(suggest("colour", allowed), None);
        assert_eq!(suggest("x", allowed), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
