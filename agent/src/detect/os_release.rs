//! The agent's one model of os-release: plain text in, OS facts out (pure,
//! so every distribution's file is a table test, `tests/fixtures/os-release/`),
//! plus the one read of the file under a root. Facts and the Alloy install
//! plan both use it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use muster_shared::facts::OsFamily;

/// Environment variable naming the os-release file the agent's facts read
/// instead of this host's: tests set it to a fixture
/// (`tests/fixtures/os-release/`), as they set `MUSTER_DETECT_PROCESS_TREE`,
/// so what the machine runs never reaches what they assert.
pub const FILE_ENV: &str = "MUSTER_OS_RELEASE";

/// What the facts take from os-release.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`, e.g. `debian`, `rhel`, `sles`, `amzn`.
    pub id: Option<String>,
    /// `VERSION_ID`, e.g. `12`, `9.4`, `15.5`, `2023` (SLES' `VERSION` is `15-SP5`).
    pub version_id: Option<String>,
    /// `ID_LIKE`, e.g. `rhel centos fedora`.
    pub id_like: Option<String>,
    /// `PRETTY_NAME`, for people.
    pub pretty_name: Option<String>,
}

impl OsRelease {
    /// Reads the keys Muster uses out of os-release text.
    pub fn parse(text: &str) -> OsRelease {
        let mut keys = parse_os_release(text);
        let mut take = |k: &str| keys.remove(k).filter(|v| !v.is_empty());
        OsRelease {
            id: take("ID"),
            version_id: take("VERSION_ID"),
            id_like: take("ID_LIKE"),
            pretty_name: take("PRETTY_NAME"),
        }
    }

    /// `<root>/etc/os-release`, else `<root>/usr/lib/os-release`; `Err` names
    /// the first when neither can be read.
    pub fn read(root: &Path) -> Result<OsRelease, PathBuf> {
        let candidates = [root.join("etc/os-release"), root.join("usr/lib/os-release")];
        candidates
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|text| OsRelease::parse(&text))
            .ok_or_else(|| candidates[0].clone())
    }

    /// The family of a Linux host with this os-release.
    pub fn family(&self) -> OsFamily {
        OsFamily::classify("linux", self.id.as_deref(), self.id_like.as_deref())
    }

    /// `ID`, or empty when there is none.
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    /// The major version number (`9` of `9.4`, `15` of `15-SP5`).
    pub fn major_version(&self) -> Option<u32> {
        let v = self.version_id.as_deref()?;
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    }
}

/// Parses os-release text (`KEY=value` lines, values optionally in single or
/// double quotes, `#` comments) into its keys and values.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| !key.is_empty() && !key.contains(char::is_whitespace))
        .map(|(key, value)| (key.to_string(), unquote(value.trim())))
        .collect()
}

/// Removes shell-style quotes: `"..."` with backslash escapes, or `'...'`.
fn unquote(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        return value[1..value.len() - 1].to_string();
    }
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        let mut out = String::new();
        let mut chars = value[1..value.len() - 1].chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        return out;
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_unquoted_and_commented_os_release() {
        let text = r#"
# a comment
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME='Debian GNU/Linux'
ID=debian
  VERSION_ID="12"
ESCAPED="say \"hi\" \\ ok"
EMPTY=
not a pair
"#;
        let r = parse_os_release(text);
        assert_eq!(r["ID"], "debian");
        assert_eq!(r["VERSION_ID"], "12");
        assert_eq!(r["NAME"], "Debian GNU/Linux");
        assert_eq!(r["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(r["ESCAPED"], r#"say "hi" \ ok"#);
        assert_eq!(r["EMPTY"], "");
        assert!(!r.keys().any(|k| k.contains('#') || k.contains(' ')));
    }

    /// Every file in `tests/fixtures/os-release/` against what it must give.
    #[test]
    fn distribution_fixtures() {
        let table: &[(&str, &str, &str, OsFamily)] = &[
            ("debian-12", "debian", "12", OsFamily::Debian),
            ("ubuntu-24.04", "ubuntu", "24.04", OsFamily::Debian),
            ("rhel-9", "rhel", "9.4", OsFamily::Rhel),
            ("rocky-8", "rocky", "8.10", OsFamily::Rhel),
            ("sles-15", "sles", "15.5", OsFamily::Suse),
            ("amzn-2023", "amzn", "2023", OsFamily::Rhel),
            ("almalinux-9", "almalinux", "9.4", OsFamily::Rhel),
            ("amzn-2", "amzn", "2", OsFamily::Rhel),
            ("centos-7", "centos", "7", OsFamily::Rhel),
            ("fedora-40", "fedora", "40", OsFamily::Rhel),
            (
                "opensuse-leap-15.6",
                "opensuse-leap",
                "15.6",
                OsFamily::Suse,
            ),
        ];
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/os-release");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no fixtures in {}", dir.display());
        let mut names: Vec<&str> = table.iter().map(|t| t.0).collect();
        names.sort();
        assert_eq!(files, names, "every fixture has a table row and back");
        for (file, id, version, family) in table {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let r = OsRelease::parse(&text);
            assert_eq!(r.id.as_deref(), Some(*id), "{file}");
            assert_eq!(r.version_id.as_deref(), Some(*version), "{file}");
            assert_eq!(r.family(), *family, "{file}");
            assert!(r.pretty_name.is_some(), "{file}");
        }
    }

    #[test]
    fn major_versions_and_reading_under_a_root() {
        let r = OsRelease::parse("ID=rocky\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n");
        assert_eq!((r.id(), r.major_version()), ("rocky", Some(9)));
        assert_eq!(r.id_like.as_deref(), Some("rhel centos fedora"));
        let sles = OsRelease::parse("ID=sles\nVERSION_ID=15-SP5\n");
        assert_eq!(sles.major_version(), Some(15));
        let root = tempfile::tempdir().unwrap();
        let missing = OsRelease::read(root.path()).unwrap_err();
        assert_eq!(missing, root.path().join("etc/os-release"));
        std::fs::create_dir_all(root.path().join("usr/lib")).unwrap();
        std::fs::write(root.path().join("usr/lib/os-release"), "ID=debian\n").unwrap();
        assert_eq!(OsRelease::read(root.path()).unwrap().id(), "debian");
    }
}
