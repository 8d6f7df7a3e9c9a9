//! Bootstrap routes on the agent listener, open to anyone: `GET /install.sh`
//! (the script in `packaging/install.sh`, rendered with this server's public
//! URL, key pin and Alloy mirror) and `GET /v1/download/<file>` (the agent
//! binaries the server was given, each with a published `<file>.sha256`).
//! The client pins the server's key (`curl --pinnedpubkey`), so the script,
//! the hashes and the binaries all come over the same verified channel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::{ApiError, Shared};
use crate::settings::AlloyMirror;

/// The script text; the server fills in the values between its markers.
pub const SCRIPT_TEMPLATE: &str = include_str!("../../../packaging/install.sh");

/// Route of the bootstrap script.
pub const SCRIPT_PATH: &str = "/install.sh";
/// Route prefix of the agent binaries.
pub const DOWNLOAD_PREFIX: &str = "/v1/download/";

/// Largest file served from the downloads dir.
const MAX_DOWNLOAD_BYTES: u64 = 256 * 1024 * 1024;

/// What `/install.sh` is rendered with.
#[derive(Clone, Debug, Default)]
pub struct ScriptValues<'a> {
    pub server: &'a str,
    pub pin: &'a str,
    pub mirror: Option<&'a AlloyMirror>,
}

/// Renders the script: each `NAME=''` line between the `BEGIN/END MUSTER
/// SERVER VALUES` markers gets its value, single-quoted for `sh`. Pure.
pub fn render_script(template: &str, values: &ScriptValues<'_>) -> String {
    let mirror = values.mirror.cloned().unwrap_or_default();
    let fill = [
        ("MUSTER_SERVER", values.server.to_string()),
        ("MUSTER_PIN", values.pin.to_string()),
        ("ALLOY_MIRROR_APT", mirror.apt.unwrap_or_default()),
        ("ALLOY_MIRROR_RPM", mirror.rpm.unwrap_or_default()),
        ("ALLOY_MIRROR_KEY", mirror.key.unwrap_or_default()),
    ];
    let mut out = String::with_capacity(template.len() + 256);
    let mut inside = false;
    for line in template.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if bare.ends_with("BEGIN MUSTER SERVER VALUES") {
            inside = true;
        } else if bare.ends_with("END MUSTER SERVER VALUES") {
            inside = false;
        } else if inside {
            if let Some((_, value)) = fill
                .iter()
                .find(|(name, _)| bare.strip_prefix(name) == Some("=''"))
            {
                let name = &bare[..bare.len() - 3];
                out.push_str(&format!("{name}={}\n", sh_quote(value)));
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// The line an operator pastes on a bare host. `-k` skips CA checks because
/// the server's certificate comes from its private CA; `--pinnedpubkey` is
/// what makes it safe: curl refuses any other key.
pub fn one_liner(public_url: &str, pin: &str, token: &str) -> String {
    format!(
        "curl -fsSk --pinnedpubkey {} {}{SCRIPT_PATH} | sudo sh -s -- --token {}",
        sh_quote(pin),
        public_url.trim_end_matches('/'),
        sh_quote(token)
    )
}

/// `value` as one single-quoted `sh` word.
pub fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// One file served under `/v1/download/`.
#[derive(Clone, Debug)]
pub struct Download {
    pub bytes: Bytes,
    /// Hex SHA-256 of `bytes`.
    pub sha256: String,
}

/// The agent binaries, read once at start-up so that a file and its
/// published hash always agree. Replace files, then restart the server.
#[derive(Clone, Debug, Default)]
pub struct Downloads {
    pub dir: PathBuf,
    pub files: BTreeMap<String, Download>,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadsError {
    #[error("cannot read downloads dir {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is larger than {MAX_DOWNLOAD_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
}

/// Whether `name` is served: `muster-agent-<os>-<arch>` of plain characters,
/// for Windows with `.exe` (the agent) or `.msi` (its installer) after it.
pub fn is_download_name(name: &str) -> bool {
    let name = if name.starts_with("muster-agent-windows-") {
        name.strip_suffix(".exe")
            .or_else(|| name.strip_suffix(".msi"))
            .unwrap_or(name)
    } else {
        name
    };
    name.strip_prefix("muster-agent-").is_some_and(|rest| {
        rest.split_once('-').is_some_and(|(os, arch)| {
            !os.is_empty()
                && !arch.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
    })
}

impl Downloads {
    /// Loads every `muster-agent-<os>-<arch>` file in `dir`; other files are
    /// ignored. A missing dir serves nothing.
    pub fn load(dir: &Path) -> Result<Downloads, DownloadsError> {
        let read_error = |error| DownloadsError::Read {
            path: dir.to_path_buf(),
            error,
        };
        let mut files = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Downloads {
                    dir: dir.to_path_buf(),
                    files,
                })
            }
            Err(e) => return Err(read_error(e)),
        };
        for entry in entries {
            let entry = entry.map_err(read_error)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !is_download_name(&name) || !path.is_file() {
                continue;
            }
            let len = entry.metadata().map_err(read_error)?.len();
            if len > MAX_DOWNLOAD_BYTES {
                return Err(DownloadsError::TooLarge { path });
            }
            let bytes = std::fs::read(&path).map_err(|error| DownloadsError::Read {
                path: path.clone(),
                error,
            })?;
            let sha256 = crate::ca::sha256_hex(&bytes);
            files.insert(
                name,
                Download {
                    bytes: Bytes::from(bytes),
                    sha256,
                },
            );
        }
        Ok(Downloads {
            dir: dir.to_path_buf(),
            files,
        })
    }
}

/// `GET /install.sh`.
pub async fn script(State(app): State<Shared>) -> Response {
    let text = render_script(
        SCRIPT_TEMPLATE,
        &ScriptValues {
            server: &app.settings.public_url,
            pin: &app.pin.to_string(),
            mirror: app.settings.alloy_mirror.as_ref(),
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

/// One entry of `GET /v1/download/`.
#[derive(Serialize)]
pub struct DownloadInfo {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// `GET /v1/download/`: what is served, with sizes and hashes.
pub async fn index(State(app): State<Shared>) -> Json<Vec<DownloadInfo>> {
    Json(
        app.downloads
            .files
            .iter()
            .map(|(name, d)| DownloadInfo {
                name: name.clone(),
                size: d.bytes.len() as u64,
                sha256: d.sha256.clone(),
            })
            .collect(),
    )
}

/// `GET /v1/download/<name>` (the binary) and `<name>.sha256` (`HEX  NAME`,
/// as `sha256sum` prints it).
pub async fn file(
    State(app): State<Shared>,
    UrlPath(requested): UrlPath<String>,
) -> Result<Response, ApiError> {
    let (name, want_hash) = match requested.strip_suffix(".sha256") {
        Some(name) => (name, true),
        None => (requested.as_str(), false),
    };
    let Some(download) = app.downloads.files.get(name) else {
        let known: Vec<&str> = app.downloads.files.keys().map(String::as_str).collect();
        return Err(ApiError::NotFound(format!(
            "no download {requested:?}; this server has {}",
            if known.is_empty() {
                "none (put muster-agent-<os>-<arch> files in its downloads dir)".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    if want_hash {
        let body = format!("{}  {name}\n", download.sha256);
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        download.bytes.clone(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_values_only_between_the_markers_and_quotes_them() {
        let mirror = AlloyMirror {
            apt: Some("https://mirror.example/apt".into()),
            rpm: None,
            key: Some("https://mirror.example/it's.key".into()),
            windows: None,
        };
        let out = render_script(
            SCRIPT_TEMPLATE,
            &ScriptValues {
                server: "https://muster.example:8443",
                pin: "sha256//abc+/=",
                mirror: Some(&mirror),
            },
        );
        assert!(out.contains("\nMUSTER_SERVER='https://muster.example:8443'\n"));
        assert!(out.contains("\nMUSTER_PIN='sha256//abc+/='\n"));
        assert!(out.contains("\nALLOY_MIRROR_APT='https://mirror.example/apt'\n"));
        assert!(out.contains("\nALLOY_MIRROR_RPM=''\n"));
        assert!(out.contains(r"ALLOY_MIRROR_KEY='https://mirror.example/it'\''s.key'"));
        // Nothing else changed.
        assert_eq!(out.lines().count(), SCRIPT_TEMPLATE.lines().count());
        assert!(out.starts_with("#!/bin/sh\n"));
    }

    #[test]
    fn every_value_has_its_line_in_the_template() {
        let out = render_script(
            SCRIPT_TEMPLATE,
            &ScriptValues {
                server: "S",
                pin: "P",
                mirror: Some(&AlloyMirror {
                    apt: Some("A".into()),
                    rpm: Some("R".into()),
                    key: Some("K".into()),
                    windows: None,
                }),
            },
        );
        for line in [
            "MUSTER_SERVER='S'",
            "MUSTER_PIN='P'",
            "ALLOY_MIRROR_APT='A'",
            "ALLOY_MIRROR_RPM='R'",
            "ALLOY_MIRROR_KEY='K'",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing");
        }
    }

    #[test]
    fn the_one_liner_pins_the_key_and_passes_the_token() {
        assert_eq!(
            one_liner("https://m.example:8443/", "sha256//AbC=", "mte_a_b"),
            "curl -fsSk --pinnedpubkey 'sha256//AbC=' https://m.example:8443/install.sh | sudo sh -s -- --token 'mte_a_b'"
        );
    }

    #[test]
    fn only_agent_binary_names_are_served() {
        assert!(is_download_name("muster-agent-linux-x86_64"));
        assert!(is_download_name("muster-agent-linux-aarch64"));
        assert!(is_download_name("muster-agent-windows-x86_64.exe"));
        assert!(is_download_name("muster-agent-windows-x86_64.msi"));
        assert!(!is_download_name("muster-agent-linux-x86_64.exe"));
        assert!(!is_download_name("muster-agent-windows-.exe"));
        assert!(!is_download_name("muster-agent-windows-x86_64.exe.sha256"));
        for bad in [
            "muster-agent-",
            "muster-agent-linux",
            "muster-agent-linux-",
            "muster-server-linux-x86_64",
            "muster-agent-linux-x86_64.sha256",
            "muster-agent-../x-y",
            ".muster-agent-linux-x86_64",
        ] {
            assert!(!is_download_name(bad), "{bad} accepted");
        }
    }

    #[test]
    fn loads_agent_binaries_with_their_hashes_and_skips_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("muster-agent-linux-x86_64"), b"abc").expect("write");
        std::fs::write(dir.path().join("README"), b"x").expect("write");
        let d = Downloads::load(dir.path()).expect("load");
        assert_eq!(d.files.len(), 1);
        assert_eq!(
            d.files["muster-agent-linux-x86_64"].sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let missing = Downloads::load(&dir.path().join("nope")).expect("missing dir");
        assert!(missing.files.is_empty());
    }
}
