//! The label schema from `server.toml`'s `[labels]` section: required names,
//! allowed names, allowed values or a pattern per name, defaults. Every place
//! that accepts operator labels (tokens, batch rows, host edits) checks them
//! here; `labels check` runs the same check over existing hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use muster_shared::labels::{self, LabelError, Labels};
use serde::Deserialize;

/// `[labels]` as written in `server.toml`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SchemaSpec {
    /// Names every host must carry (after defaults).
    #[serde(default)]
    pub required: Vec<String>,
    /// When given, the only names accepted (plus those named in `required`,
    /// `defaults` and `rules`). When absent, any valid name is accepted.
    #[serde(default)]
    pub allowed: Option<Vec<String>>,
    /// Values filled in when a label is not given.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    /// Per-name value rules.
    #[serde(default)]
    pub rules: BTreeMap<String, RuleSpec>,
}

/// `[labels.rules.NAME]`: a list of values or a pattern (not both).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    #[serde(default)]
    pub values: Option<Vec<String>>,
    /// A regular expression the whole value must match.
    #[serde(default)]
    pub pattern: Option<String>,
}

#[derive(Clone, Debug)]
enum Rule {
    Values(Vec<String>),
    Pattern { text: String, regex: regex::Regex },
}

/// The compiled schema.
#[derive(Clone, Debug, Default)]
pub struct LabelSchema {
    required: Vec<String>,
    /// `None`: any valid name.
    allowed: Option<BTreeSet<String>>,
    defaults: Labels,
    rules: BTreeMap<String, Rule>,
}

/// One way a label set breaks the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A name or value that is not a valid label at all.
    Label(LabelError),
    Unknown {
        name: String,
        suggestion: Option<String>,
    },
    NotInValues {
        name: String,
        value: String,
        values: Vec<String>,
        suggestion: Option<String>,
    },
    NoMatch {
        name: String,
        value: String,
        pattern: String,
    },
    Missing {
        name: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Label(e) => write!(f, "{e}"),
            Problem::Unknown { name, suggestion } => {
                write!(f, "label {name:?} is not allowed by the label schema")?;
                match suggestion {
                    Some(s) => write!(f, "; did you mean {s:?}?"),
                    None => write!(f, " (see [labels] allowed in server.toml)"),
                }
            }
            Problem::NotInValues {
                name,
                value,
                values,
                suggestion,
            } => {
                write!(
                    f,
                    "label {name:?}: value {value:?} breaks rule labels.rules.{name}.values: it must be one of {}",
                    values.join(", ")
                )?;
                if let Some(s) = suggestion {
                    write!(f, "; did you mean {s:?}?")?;
                }
                Ok(())
            }
            Problem::NoMatch {
                name,
                value,
                pattern,
            } => write!(
                f,
                "label {name:?}: value {value:?} breaks rule labels.rules.{name}.pattern: it must match {pattern:?}"
            ),
            Problem::Missing { name } => write!(
                f,
                "required label {name:?} is missing (labels.required in server.toml)"
            ),
        }
    }
}

/// Every problem of a label set, in a stable order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaError(pub Vec<Problem>);

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Problem::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for SchemaError {}

impl LabelSchema {
    /// Checks the spec itself: names valid, rules well-formed, patterns
    /// compiling, defaults obeying their rules. Errors name the setting.
    pub fn compile(spec: &SchemaSpec) -> Result<LabelSchema, String> {
        let check_name = |setting: &str, name: &str| -> Result<(), String> {
            if labels::FACT_LABELS.contains(&name) {
                return Err(format!(
                    "labels.{setting}: {name:?} is set by Muster from host facts"
                ));
            }
            labels::check_settable(name).map_err(|e| format!("labels.{setting}: {e}"))
        };
        for name in &spec.required {
            check_name("required", name)?;
        }
        for name in spec.allowed.iter().flatten() {
            check_name("allowed", name)?;
        }
        let mut rules = BTreeMap::new();
        for (name, rule) in &spec.rules {
            check_name("rules", name)?;
            let compiled = match (&rule.values, &rule.pattern) {
                (Some(values), None) => {
                    if values.is_empty() {
                        return Err(format!("labels.rules.{name}.values is empty"));
                    }
                    for v in values {
                        labels::check_value(name, v)
                            .map_err(|e| format!("labels.rules.{name}.values: {e}"))?;
                    }
                    Rule::Values(values.clone())
                }
                (None, Some(pattern)) => {
                    let regex = regex::Regex::new(&format!("^(?:{pattern})$"))
                        .map_err(|e| format!("labels.rules.{name}.pattern: {e}"))?;
                    Rule::Pattern {
                        text: pattern.clone(),
                        regex,
                    }
                }
                _ => {
                    return Err(format!(
                        "labels.rules.{name}: give either values or pattern (exactly one)"
                    ))
                }
            };
            rules.insert(name.clone(), compiled);
        }
        let allowed = spec.allowed.as_ref().map(|names| {
            names
                .iter()
                .chain(&spec.required)
                .chain(spec.defaults.keys())
                .chain(spec.rules.keys())
                .cloned()
                .collect::<BTreeSet<_>>()
        });
        let mut schema = LabelSchema {
            required: spec.required.clone(),
            allowed,
            defaults: Labels::new(),
            rules,
        };
        for (name, value) in &spec.defaults {
            check_name("defaults", name)?;
            let problems = schema.value_problems(name, value);
            if let Some(p) = problems.first() {
                return Err(format!("labels.defaults.{name}: {p}"));
            }
        }
        schema.defaults = spec.defaults.clone().into_iter().collect();
        Ok(schema)
    }

    /// Every name the schema knows (for suggestions).
    fn known_names(&self) -> BTreeSet<&str> {
        let mut names: BTreeSet<&str> = self.required.iter().map(String::as_str).collect();
        names.extend(self.defaults.keys().map(String::as_str));
        names.extend(self.rules.keys().map(String::as_str));
        if let Some(allowed) = &self.allowed {
            names.extend(allowed.iter().map(String::as_str));
        }
        names
    }

    fn value_problems(&self, name: &str, value: &str) -> Vec<Problem> {
        if let Err(e) = labels::check_value(name, value) {
            return vec![Problem::Label(e)];
        }
        match self.rules.get(name) {
            Some(Rule::Values(values)) if !values.iter().any(|v| v == value) => {
                vec![Problem::NotInValues {
                    name: name.to_string(),
                    value: value.to_string(),
                    values: values.clone(),
                    suggestion: labels::suggest(value, values.iter().map(String::as_str))
                        .map(str::to_string),
                }]
            }
            Some(Rule::Pattern { text, regex }) if !regex.is_match(value) => {
                vec![Problem::NoMatch {
                    name: name.to_string(),
                    value: value.to_string(),
                    pattern: text.clone(),
                }]
            }
            _ => Vec::new(),
        }
    }

    /// `labels` with the defaults filled in, or every problem found.
    pub fn check(&self, given: &Labels) -> Result<Labels, SchemaError> {
        let mut problems = Vec::new();
        if given.len() > labels::MAX_LABELS {
            problems.push(Problem::Label(LabelError::TooMany));
        }
        for (name, value) in given {
            if let Err(e) = labels::check_settable(name) {
                problems.push(Problem::Label(e));
                continue;
            }
            if let Some(allowed) = &self.allowed {
                if !allowed.contains(name) {
                    problems.push(Problem::Unknown {
                        name: name.clone(),
                        suggestion: labels::suggest(name, self.known_names()).map(str::to_string),
                    });
                    continue;
                }
            }
            problems.extend(self.value_problems(name, value));
        }
        let mut full = given.clone();
        for (name, value) in &self.defaults {
            full.entry(name.clone()).or_insert_with(|| value.clone());
        }
        for name in &self.required {
            if !full.contains_key(name) {
                problems.push(Problem::Missing { name: name.clone() });
            }
        }
        if problems.is_empty() {
            Ok(full)
        } else {
            Err(SchemaError(problems))
        }
    }

    /// Checks labels already stored (defaults are not filled in: a host
    /// missing a required label is reported, not silently fixed).
    pub fn audit(&self, stored: &Labels) -> Vec<Problem> {
        match self.check(stored) {
            Ok(full) if full.len() == stored.len() => Vec::new(),
            Ok(full) => full
                .keys()
                .filter(|k| !stored.contains_key(*k) && self.required.contains(k))
                .map(|k| Problem::Missing { name: k.clone() })
                .collect(),
            Err(SchemaError(mut problems)) => {
                for name in &self.required {
                    let missing = Problem::Missing { name: name.clone() };
                    if !stored.contains_key(name) && !problems.contains(&missing) {
                        problems.push(missing);
                    }
                }
                problems
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> LabelSchema {
        let spec: SchemaSpec = toml::from_str(
            r#"
            required = ["environment", "maintainers"]
            allowed = ["team"]
            [defaults]
            environment = "production"
            [rules.environment]
            values = ["production", "staging", "dev"]
            [rules.location]
            pattern = "rack-[0-9]+"
            [rules.maintainers]
            pattern = "[a-z]+(;[a-z]+)*"
            "#,
        )
        .expect("spec parses");
        LabelSchema::compile(&spec).expect("compiles")
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_fill_in_and_good_labels_pass() {
        let full = schema()
            .check(&labels(&[
                ("maintainers", "ops;dba"),
                ("location", "rack-2"),
            ]))
            .expect("valid");
        assert_eq!(full["environment"], "production");
        assert_eq!(full.len(), 3);
    }

    #[test]
    fn an_unknown_name_suggests_the_nearest_allowed_one() {
        let err = schema()
            .check(&labels(&[("maintainer", "ops")]))
            .expect_err("unknown");
        let text = err.to_string();
        assert!(text.contains("did you mean \"maintainers\"?"), "{text}");
        assert!(
            text.contains("required label \"maintainers\" is missing"),
            "{text}"
        );
    }

    #[test]
    fn bad_values_name_the_rule_they_broke() {
        let err = schema()
            .check(&labels(&[
                ("maintainers", "ops"),
                ("environment", "prod"),
                ("location", "r2"),
            ]))
            .expect_err("bad values")
            .to_string();
        assert!(err.contains("labels.rules.environment.values"), "{err}");
        assert!(err.contains("production, staging, dev"), "{err}");
        assert!(err.contains("labels.rules.location.pattern"), "{err}");
        assert!(err.contains("\"rack-[0-9]+\""), "{err}");
        // The pattern is anchored: a match inside the value is not enough.
        assert!(schema()
            .check(&labels(&[("maintainers", "ops"), ("location", "xrack-2x")]))
            .is_err());
    }

    #[test]
    fn fact_labels_and_bad_names_are_refused_even_without_a_schema() {
        let open = LabelSchema::default();
        assert!(open.check(&labels(&[("anything", "goes")])).is_ok());
        let err = open
            .check(&labels(&[("hostname", "x"), ("a-b", "y")]))
            .expect_err("refused");
        assert_eq!(err.0.len(), 2, "{err}");
    }

    #[test]
    fn broken_specs_are_refused_naming_the_setting() {
        for (text, want) in [
            ("[rules.x]\nvalues = []", "labels.rules.x.values is empty"),
            ("[rules.x]\npattern = \"(\"", "labels.rules.x.pattern"),
            (
                "[rules.x]\npattern = \"a\"\nvalues = [\"a\"]",
                "exactly one",
            ),
            ("required = [\"__x\"]", "labels.required"),
            ("required = [\"hostname\"]", "host facts"),
            ("required = [\"job\"]", "set on every target"),
            ("[defaults]\ninstance = \"x\"", "set on every target"),
            (
                "[defaults]\nx = \"b\"\n[rules.x]\nvalues = [\"a\"]",
                "labels.defaults.x",
            ),
        ] {
            let spec: SchemaSpec = toml::from_str(text).expect(text);
            let err = LabelSchema::compile(&spec).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn audit_reports_missing_required_labels_without_filling_them() {
        let s = schema();
        let problems = s.audit(&labels(&[("maintainers", "ops")]));
        assert_eq!(
            problems,
            vec![Problem::Missing {
                name: "environment".into()
            }]
        );
        assert!(s
            .audit(&labels(&[("maintainers", "ops"), ("environment", "dev")]))
            .is_empty());
    }
}
