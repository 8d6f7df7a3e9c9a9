//! How errors read in logs and reports: a cause chain on one line, and text
//! cut to a size on a character boundary.

use std::error::Error as StdError;

/// Cuts `text` to at most `max` bytes (on a character boundary), saying so.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (truncated)", &text[..end])
}

/// An error and its causes on one line: reqwest's own message rarely says
/// what went wrong underneath (refused, timed out, certificate unknown...).
pub fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_on_a_char_boundary() {
        assert_eq!(bounded("short", 10), "short");
        let cut = bounded("ééééé", 3);
        assert!(
            cut.starts_with('é') && cut.ends_with("(truncated)"),
            "{cut}"
        );
    }

    #[derive(Debug)]
    struct Wrapper(&'static str, std::io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn the_chain_names_each_cause_once() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            error_chain(&Wrapper("cannot connect", refused())),
            "cannot connect: refused"
        );
        // A message that already says its cause does not repeat it.
        assert_eq!(
            error_chain(&Wrapper("cannot connect: refused", refused())),
            "cannot connect: refused"
        );
    }
}
