//! Alloy's environment file (`/etc/default/alloy` on Debian,
//! `/etc/sysconfig/alloy` on RHEL and SUSE): making Alloy's HTTP server
//! listen where Prometheus can scrape it by setting
//! `--server.http.listen-addr` in `CUSTOM_ARGS` (only that flag changes;
//! every other line, and every other flag, is kept as it was), and reading
//! the flags `alloy validate` must share with `alloy run`.
//!
//! On Windows the listen flag lives in the service's arguments: the
//! `Arguments` value (REG_MULTI_SZ) under `HKLM\Software\GrafanaLabs\Alloy`,
//! one argument per string ([`set_listen_arg`], [`update_registry`]).

use std::path::{Path, PathBuf};

/// The flag Alloy's HTTP listen address is set with.
pub const LISTEN_FLAG: &str = "--server.http.listen-addr";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("CUSTOM_ARGS on line {line} uses {what}, which this editor does not rewrite: set {LISTEN_FLAG}=ADDR in it by hand")]
    Unsupported { line: usize, what: &'static str },
    #[error("the listen address {0:?} is not host:port")]
    BadAddress(String),
}

/// Sets `--server.http.listen-addr=<addr>` in the `CUSTOM_ARGS` line of an
/// environment file's text, adding the line when there is none. Returns the
/// new text (equal to `text` when the flag already has that value). Pure.
pub fn set_listen_addr(text: &str, addr: &str) -> Result<String, EnvError> {
    if addr.is_empty()
        || addr.contains(|c: char| c.is_whitespace() || "\"'\\$`".contains(c))
        || !addr.contains(':')
    {
        return Err(EnvError::BadAddress(addr.to_string()));
    }
    let wanted = format!("{LISTEN_FLAG}={addr}");
    let mut out = String::with_capacity(text.len() + wanted.len() + 16);
    let mut found = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        let Some((prefix, value)) = custom_args_line(body) else {
            out.push_str(line);
            continue;
        };
        found = true;
        let args = unquote(value).ok_or(EnvError::Unsupported {
            line: i + 1,
            what: "quoting, variables or escapes",
        })?;
        let mut words: Vec<String> = Vec::new();
        let mut iter = args.split_whitespace();
        while let Some(word) = iter.next() {
            if word == LISTEN_FLAG {
                iter.next(); // `--flag value`: drop the value too
            } else if !word.starts_with(&format!("{LISTEN_FLAG}=")) {
                words.push(word.to_string());
            }
        }
        words.push(wanted.clone());
        out.push_str(&format!("{prefix}\"{}\"{ending}", words.join(" ")));
    }
    if !found {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("CUSTOM_ARGS=\"{wanted}\"\n"));
    }
    Ok(out)
}

/// `(prefix up to and including '=', value)` of a `CUSTOM_ARGS=` line.
fn custom_args_line(line: &str) -> Option<(&str, &str)> {
    let trimmed = line.trim_start();
    let after_export = trimmed
        .strip_prefix("export ")
        .map(str::trim_start)
        .unwrap_or(trimmed);
    let rest = after_export.strip_prefix("CUSTOM_ARGS=")?;
    let prefix_len = line.len() - rest.len();
    Some((&line[..prefix_len], rest))
}

/// The words of a value in plain, `"..."` or `'...'` form; `None` for
/// anything with variables, escapes, command substitution or inner quotes.
fn unquote(value: &str) -> Option<String> {
    let value = value.trim();
    let inner = if value.len() >= 2
        && ((value.starts_with('"') && value.ends_with('"'))
            || (value.starts_with('\'') && value.ends_with('\'')))
    {
        &value[1..value.len() - 1]
    } else {
        value
    };
    if inner.contains(['"', '\'', '\\', '$', '`']) {
        return None;
    }
    Some(inner.to_string())
}

/// The listen address currently set in `text`, if any.
pub fn listen_addr(text: &str) -> Option<String> {
    text.lines()
        .filter_map(custom_args_line)
        .find_map(|(_, value)| {
            let args = unquote(value)?;
            let mut iter = args.split_whitespace();
            let mut found = None;
            while let Some(word) = iter.next() {
                if let Some(v) = word.strip_prefix(&format!("{LISTEN_FLAG}=")) {
                    found = Some(v.to_string());
                } else if word == LISTEN_FLAG {
                    found = iter.next().map(str::to_string);
                }
            }
            found
        })
}

/// Where the packages put the environment file: Debian's, then the RPM
/// distributions'.
pub const ENV_FILES: [&str; 2] = ["/etc/default/alloy", "/etc/sysconfig/alloy"];

/// The flags of `alloy run` that `alloy validate` must be given too, or it
/// judges a config by other rules than the running Alloy (`alloy validate
/// --help`: `--stability.level`, `--feature.community-components.enabled`).
const VALIDATE_FLAGS: [&str; 2] = [
    "--stability.level",
    "--feature.community-components.enabled",
];

/// Of `alloy run`'s arguments, those `alloy validate` needs, each as
/// `--flag=value` (`--flag value` is joined; a bare boolean flag is kept
/// bare). Pure; the words come from `CUSTOM_ARGS` on Linux or the service's
/// `Arguments` on Windows.
pub fn validate_flags<S: AsRef<str>>(run_args: &[S]) -> Vec<String> {
    let mut out = Vec::new();
    let mut iter = run_args.iter().map(AsRef::as_ref).peekable();
    while let Some(word) = iter.next() {
        let (name, value) = match word.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (word, None),
        };
        // Go's flag package takes one or two leading dashes alike.
        let name = format!("--{}", name.trim_start_matches('-'));
        if !VALIDATE_FLAGS.contains(&name.as_str()) {
            continue;
        }
        let value = value.or_else(|| {
            let boolean = name.starts_with("--feature.");
            let next = iter.peek().filter(|v| !v.starts_with('-') && !boolean);
            next.is_some()
                .then(|| iter.next().unwrap_or_default().to_string())
        });
        out.push(match value {
            Some(v) => format!("{name}={v}"),
            None => name,
        });
    }
    out
}

/// The words of the `CUSTOM_ARGS` line of an environment file's text (the
/// last one wins, as in the shell); empty when there is none or it uses
/// shell features this reader does not follow.
pub fn custom_args(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(custom_args_line)
        .filter_map(|(_, value)| unquote(value))
        .next_back()
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The flags `alloy validate` needs, read from the environment file at
/// `path`; none when it cannot be read.
pub fn validate_flags_from_file(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| validate_flags(&custom_args(&text)))
        .unwrap_or_default()
}

/// The flags `alloy validate` needs, read from Alloy's Windows service
/// arguments (the `Arguments` registry value its installer writes, one
/// argument per string); none when they cannot be read.
#[cfg(windows)]
pub fn validate_flags_from_service() -> Vec<String> {
    registry_arguments()
        .map(|args| validate_flags(&args))
        .unwrap_or_default()
}

/// Not Windows: Alloy's flags are in its environment file, which the
/// settings name ([`validate_flags_from_file`]); there is no other source.
#[cfg(not(windows))]
pub fn validate_flags_from_service() -> Vec<String> {
    Vec::new()
}

/// Alloy's Windows service arguments: the `Arguments` value under
/// `HKLM\`[`REGISTRY_KEY`].
#[cfg(windows)]
fn registry_arguments() -> std::io::Result<Vec<String>> {
    winreg::RegKey::predef(winreg::enums::HKEY_LOCAL_MACHINE)
        .open_subkey(REGISTRY_KEY)?
        .get_value("Arguments")
}

#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {error}", path.display())]
    Edit { path: PathBuf, error: EnvError },
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Sets the listen address in the file at `path` (created when missing,
/// mode kept otherwise). Returns whether the file changed.
pub fn update_file(path: &Path, addr: &str) -> Result<bool, EnvFileError> {
    let (text, mode) = match std::fs::read_to_string(path) {
        Ok(text) => (text, file_mode(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o644),
        Err(error) => {
            return Err(EnvFileError::Read {
                path: path.to_path_buf(),
                error,
            })
        }
    };
    let new = set_listen_addr(&text, addr).map_err(|error| EnvFileError::Edit {
        path: path.to_path_buf(),
        error,
    })?;
    if new == text {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|error| EnvFileError::Write {
            path: dir.to_path_buf(),
            error,
        })?;
    }
    crate::atomic_file::write_atomic(path, new.as_bytes(), mode).map_err(|error| {
        EnvFileError::Write {
            path: path.to_path_buf(),
            error,
        }
    })?;
    Ok(true)
}

/// Sets `--server.http.listen-addr=<addr>` in Alloy's Windows service
/// arguments, dropping any earlier value of the flag (`--flag=value` or
/// `--flag value`) and keeping every other argument in order. Returns the new
/// list (equal to `args` when the flag already has that value). Pure.
pub fn set_listen_arg(args: &[String], addr: &str) -> Result<Vec<String>, EnvError> {
    if addr.is_empty() || addr.contains(char::is_whitespace) || !addr.contains(':') {
        return Err(EnvError::BadAddress(addr.to_string()));
    }
    let wanted = format!("{LISTEN_FLAG}={addr}");
    let mut out = Vec::with_capacity(args.len() + 1);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == LISTEN_FLAG {
            iter.next(); // `--flag value`: drop the value too
        } else if arg.starts_with(&format!("{LISTEN_FLAG}=")) {
            // dropped; the wanted value goes last
        } else {
            out.push(arg.clone());
        }
    }
    out.push(wanted);
    Ok(out)
}

/// Where Alloy's Windows installer keeps the service's settings (under HKLM).
pub const REGISTRY_KEY: &str = r"Software\GrafanaLabs\Alloy";

/// Sets the listen address in Alloy's `Arguments` registry value. Returns
/// whether it changed. The value must exist: Alloy's installer writes it
/// (`run`, the config file, `--storage.path=...`).
#[cfg(windows)]
pub fn update_registry(addr: &str) -> Result<bool, EnvFileError> {
    use winreg::enums::{HKEY_LOCAL_MACHINE, KEY_READ, KEY_WRITE};
    let path = PathBuf::from(format!(r"HKLM\{REGISTRY_KEY}\Arguments"));
    let key = winreg::RegKey::predef(HKEY_LOCAL_MACHINE)
        .open_subkey_with_flags(REGISTRY_KEY, KEY_READ | KEY_WRITE)
        .map_err(|error| EnvFileError::Read {
            path: path.clone(),
            error,
        })?;
    let args: Vec<String> = key
        .get_value("Arguments")
        .map_err(|error| EnvFileError::Read {
            path: path.clone(),
            error,
        })?;
    let new = set_listen_arg(&args, addr).map_err(|error| EnvFileError::Edit {
        path: path.clone(),
        error,
    })?;
    if new == args {
        return Ok(false);
    }
    key.set_value("Arguments", &new)
        .map_err(|error| EnvFileError::Write { path, error })?;
    Ok(true)
}

/// The file's permission bits, kept when it is rewritten.
#[cfg(unix)]
fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644)
}

#[cfg(not(unix))]
fn file_mode(_path: &Path) -> u32 {
    0o644
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn windows_arguments_get_the_flag_last_and_keep_the_rest() {
        let installed = strings(&[
            "run",
            r"C:\Program Files\GrafanaLabs\Alloy\config.alloy",
            r"--storage.path=C:\ProgramData\GrafanaLabs\Alloy\data",
        ]);
        let set = set_listen_arg(&installed, "0.0.0.0:12345").expect("set");
        assert_eq!(set[..3], installed[..]);
        assert_eq!(set[3], "--server.http.listen-addr=0.0.0.0:12345");
        assert_eq!(set_listen_arg(&set, "0.0.0.0:12345").expect("again"), set);

        let both_forms = strings(&[
            "run",
            "--server.http.listen-addr",
            "127.0.0.1:1",
            "--server.http.listen-addr=127.0.0.1:2",
            "--stability.level=generally-available",
        ]);
        assert_eq!(
            set_listen_arg(&both_forms, "10.0.0.5:9000").expect("set"),
            strings(&[
                "run",
                "--stability.level=generally-available",
                "--server.http.listen-addr=10.0.0.5:9000",
            ])
        );
        for bad in ["", "nocolon", "1.2.3.4:5 --x"] {
            assert_eq!(
                set_listen_arg(&installed, bad),
                Err(EnvError::BadAddress(bad.to_string()))
            );
        }
    }

    /// The file Grafana's packages install (`shared/ALLOY.md`).
    const PACKAGED: &str = "## Path:\n## Description: Grafana Alloy settings\n\
        CONFIG_FILE=\"/etc/alloy/config.alloy\"\n\n\
        # User-defined arguments to pass to the run command.\n\
        CUSTOM_ARGS=\"\"\n\n\
        # Restart on system upgrade. Defaults to true.\n\
        RESTART_ON_UPGRADE=true\n";

    #[test]
    fn sets_the_flag_in_the_packaged_file_keeping_every_other_line() {
        let out = set_listen_addr(PACKAGED, "0.0.0.0:12345").unwrap();
        assert_eq!(
            out,
            PACKAGED.replace(
                "CUSTOM_ARGS=\"\"",
                "CUSTOM_ARGS=\"--server.http.listen-addr=0.0.0.0:12345\""
            )
        );
        assert_eq!(listen_addr(&out).as_deref(), Some("0.0.0.0:12345"));
        // Idempotent.
        assert_eq!(set_listen_addr(&out, "0.0.0.0:12345").unwrap(), out);
    }

    #[test]
    fn replaces_either_form_of_the_flag_and_keeps_other_flags() {
        for line in [
            "CUSTOM_ARGS=\"--stability.level=public-preview --server.http.listen-addr=127.0.0.1:12345\"",
            "CUSTOM_ARGS='--stability.level=public-preview --server.http.listen-addr 127.0.0.1:12345'",
            "CUSTOM_ARGS=--stability.level=public-preview",
        ] {
            let out = set_listen_addr(&format!("A=1\n{line}\nB=2"), "10.0.0.5:12345").unwrap();
            assert_eq!(
                out,
                "A=1\nCUSTOM_ARGS=\"--stability.level=public-preview --server.http.listen-addr=10.0.0.5:12345\"\nB=2",
                "{line}"
            );
        }
    }

    #[test]
    fn keeps_an_export_prefix() {
        assert_eq!(
            set_listen_addr("export CUSTOM_ARGS=\"--x\"\n", "0.0.0.0:1").unwrap(),
            "export CUSTOM_ARGS=\"--x --server.http.listen-addr=0.0.0.0:1\"\n"
        );
    }

    #[test]
    fn adds_the_line_when_missing() {
        assert_eq!(
            set_listen_addr("CONFIG_FILE=x", "0.0.0.0:9").unwrap(),
            "CONFIG_FILE=x\nCUSTOM_ARGS=\"--server.http.listen-addr=0.0.0.0:9\"\n"
        );
        assert_eq!(
            set_listen_addr("", "0.0.0.0:9").unwrap(),
            "CUSTOM_ARGS=\"--server.http.listen-addr=0.0.0.0:9\"\n"
        );
    }

    #[test]
    fn refuses_what_it_cannot_rewrite_faithfully() {
        let err = set_listen_addr("CUSTOM_ARGS=\"$EXTRA --x\"\n", "0.0.0.0:1").unwrap_err();
        assert!(
            matches!(err, EnvError::Unsupported { line: 1, .. }),
            "{err}"
        );
        for bad in ["", "0.0.0.0", "a b:1", "x:1\"", "$(id):1"] {
            assert!(set_listen_addr("", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_gets_the_stability_and_feature_flags_alloy_runs_with() {
        let text = "CUSTOM_ARGS=\"--server.http.listen-addr=0.0.0.0:12345 --stability.level public-preview --feature.community-components.enabled --storage.path=/x\"\n";
        let words = custom_args(text);
        assert_eq!(words.len(), 5);
        assert_eq!(
            validate_flags(&words),
            [
                "--stability.level=public-preview",
                "--feature.community-components.enabled"
            ]
        );
        assert_eq!(
            validate_flags(&[
                "-stability.level=experimental",
                "--feature.community-components.enabled=true"
            ]),
            [
                "--stability.level=experimental",
                "--feature.community-components.enabled=true"
            ]
        );
        // Windows: the service's Arguments, one word per value.
        let windows = [
            "run",
            "C:\\Alloy\\config.alloy",
            "--storage.path=C:\\data",
            "--stability.level=public-preview",
        ];
        assert_eq!(
            validate_flags(&windows),
            ["--stability.level=public-preview"]
        );
        // Its installer's value with the flags added as two strings each
        // (a path with spaces stays one argument).
        let windows = [
            "run",
            "C:\\Program Files\\GrafanaLabs\\Alloy\\config.alloy",
            "--storage.path=C:\\ProgramData\\GrafanaLabs\\Alloy\\data",
            "--stability.level",
            "experimental",
            "--feature.community-components.enabled",
            "--server.http.listen-addr=0.0.0.0:12345",
        ];
        assert_eq!(
            validate_flags(&windows),
            [
                "--stability.level=experimental",
                "--feature.community-components.enabled"
            ]
        );
        assert!(validate_flags(&custom_args(PACKAGED)).is_empty());
        assert!(custom_args("CUSTOM_ARGS=\"$X\"").is_empty());
    }

    #[test]
    fn update_file_keeps_the_mode_and_reports_changes() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alloy");
        std::fs::write(&path, PACKAGED).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(update_file(&path, "0.0.0.0:12345").unwrap());
        assert!(!update_file(&path, "0.0.0.0:12345").unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let missing = dir.path().join("sysconfig/alloy");
        assert!(update_file(&missing, "0.0.0.0:1").unwrap());
        assert!(std::fs::read_to_string(missing)
            .unwrap()
            .contains("0.0.0.0:1"));
    }
}
