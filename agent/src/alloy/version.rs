//! Alloy's release numbers: reading them from `alloy --version` output and
//! choosing how a candidate config is checked (`validate` from 1.9, else
//! `fmt`). Pure.

/// An Alloy release number, as `alloy --version` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlloyVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// As printed, e.g. `v1.10.2`.
    pub text: String,
}

/// Finds the version in `alloy --version` output, e.g.
/// `alloy, version v1.10.2 (branch: HEAD, revision: 1a2b3c)`.
pub fn parse_alloy_version(output: &str) -> Option<AlloyVersion> {
    let words: Vec<&str> = output.split_whitespace().collect();
    let after_version = words
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case("version"))
        .and_then(|w| parse_version_word(w[1]));
    after_version.or_else(|| {
        words
            .iter()
            .filter(|w| w.starts_with('v'))
            .find_map(|w| parse_version_word(w))
    })
}

fn parse_version_word(word: &str) -> Option<AlloyVersion> {
    let text = word.trim_matches(|c: char| c == ',' || c == '(' || c == ')');
    let bare = text.strip_prefix('v').unwrap_or(text);
    // `1.11.0-rc.1` or `1.11.0+devel`: the release part decides.
    let release = bare.split(['-', '+']).next()?;
    let mut parts = release.split('.').map(|p| p.parse::<u64>().ok());
    let (major, minor) = (parts.next()??, parts.next()??);
    let patch = parts.next().flatten().unwrap_or(0);
    Some(AlloyVersion {
        major,
        minor,
        patch,
        text: text.to_string(),
    })
}

/// How a candidate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// `alloy validate FILE`: syntax, components, arguments, references (1.9+).
    Validate,
    /// `alloy fmt FILE`: syntax only. Never `fmt -t`, which also fails on
    /// merely unformatted files.
    Fmt,
}

/// `validate` where the Alloy is new enough to have it, else `fmt`.
pub fn check_for(version: Option<&AlloyVersion>) -> Check {
    match version {
        Some(v) if (v.major, v.minor) >= (1, 9) => Check::Validate,
        _ => Check::Fmt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_alloy_version_output() {
        let v = parse_alloy_version(
            "alloy, version v1.10.2 (branch: HEAD, revision: 7bd2b8f1a)\n  build user: root@x\n  go version: go1.24\n",
        )
        .unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 10, 2));
        assert_eq!(v.text, "v1.10.2");
        let rc = parse_alloy_version("alloy, version v1.11.0-rc.1 (branch: x)").unwrap();
        assert_eq!((rc.major, rc.minor, rc.patch), (1, 11, 0));
        let old = parse_alloy_version("alloy, version v1.8.3").unwrap();
        assert_eq!((old.major, old.minor), (1, 8));
        assert_eq!(parse_alloy_version("something else entirely"), None);
        assert_eq!(parse_alloy_version(""), None);
    }

    #[test]
    fn validate_from_1_9_else_fmt() {
        let v = |s: &str| parse_alloy_version(s);
        assert_eq!(
            check_for(v("alloy, version v1.9.0").as_ref()),
            Check::Validate
        );
        assert_eq!(
            check_for(v("alloy, version v1.18.1").as_ref()),
            Check::Validate
        );
        assert_eq!(
            check_for(v("alloy, version v2.0.0").as_ref()),
            Check::Validate
        );
        assert_eq!(check_for(v("alloy, version v1.8.9").as_ref()), Check::Fmt);
        assert_eq!(check_for(v("alloy, version v0.30.0").as_ref()), Check::Fmt);
        assert_eq!(check_for(None), Check::Fmt);
    }
}
