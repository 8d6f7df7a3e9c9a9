//! The line diff on the host page: the config the agent applied against the
//! one the server renders now, as a unified diff (`similar`), each line
//! tagged for the stylesheet.

use serde::Serialize;

/// One line of a unified diff.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct DiffLine {
    /// `head` (the `---`/`+++` lines), `hunk` (`@@`), `del`, `add` or `same`.
    pub kind: &'static str,
    pub text: String,
}

/// `applied` → `rendered`, three lines of context; empty when they are the
/// same.
pub fn config_diff(applied: &str, rendered: &str) -> Vec<DiffLine> {
    if applied == rendered {
        return Vec::new();
    }
    let text = similar::TextDiff::from_lines(applied, rendered)
        .unified_diff()
        .context_radius(3)
        .header("applied by the agent", "rendered by the server")
        .to_string();
    text.lines()
        .enumerate()
        .map(|(n, line)| DiffLine {
            kind: match line.as_bytes().first() {
                _ if n < 2 => "head",
                Some(b'@') => "hunk",
                Some(b'-') => "del",
                Some(b'+') => "add",
                _ => "same",
            },
            text: line.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_line_shows_as_removed_and_added_with_context() {
        let applied = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let rendered = "a\nb\nc\nd\nE\nf\ng\nh\n";
        let lines = config_diff(applied, rendered);
        let shown: Vec<(&str, &str)> = lines.iter().map(|l| (l.kind, l.text.as_str())).collect();
        assert_eq!(
            shown,
            vec![
                ("head", "--- applied by the agent"),
                ("head", "+++ rendered by the server"),
                ("hunk", "@@ -2,7 +2,7 @@"),
                ("same", " b"),
                ("same", " c"),
                ("same", " d"),
                ("del", "-e"),
                ("add", "+E"),
                ("same", " f"),
                ("same", " g"),
                ("same", " h"),
            ]
        );
    }

    #[test]
    fn the_same_config_has_no_diff() {
        assert!(config_diff("a\n", "a\n").is_empty());
    }
}
