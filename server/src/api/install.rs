//! Bootstrap routes on the agent listener, open to anyone: `GET /install.sh`
//! (the script in `packaging/install.sh`, rendered with this server's public
//! URL, key pin and Alloy mirror) and `GET /v1/download/<file>` (the agent
//! binaries the server was given, each with a published `<file>.sha256`).
//! The client pins the server's key (`curl --pinnedpubkey`), so the script,
//! the hashes and the binaries all come over the same verified channel.

use axum::extract::{Path as UrlPath, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::{ApiError, Shared};
use crate::bootstrap::sh_quote;
pub use crate::bootstrap::SCRIPT_PATH;
use crate::settings::AlloyMirror;

/// The script text; the server fills in the values between its markers.
pub const SCRIPT_TEMPLATE: &str = include_str!("../../../packaging/install.sh");

/// Route prefix of the agent binaries.
pub const DOWNLOAD_PREFIX: &str = "/v1/download/";

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

pub use crate::downloads::{
    agent_beside_executable, is_download_name, own_platform_name, Download, Downloads,
    DownloadsError,
};

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
pub async fn index(State(app): State<Shared>) -> Result<Json<Vec<DownloadInfo>>, ApiError> {
    let files = app
        .downloads
        .files()
        .map_err(|e| ApiError::internal("cannot read the downloads dir", e))?;
    Ok(Json(
        files
            .iter()
            .map(|(name, d)| DownloadInfo {
                name: name.clone(),
                size: d.bytes.len() as u64,
                sha256: d.sha256.clone(),
            })
            .collect(),
    ))
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
    let found = app
        .downloads
        .get(name)
        .map_err(|e| ApiError::internal("cannot read the downloads dir", e))?;
    let Some(download) = found else {
        let names = app.downloads.names();
        let known: Vec<&str> = names.iter().map(String::as_str).collect();
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
        let d = Downloads::load(dir.path(), None).expect("load");
        let files = d.files().expect("read");
        assert_eq!(files.len(), 1);
        assert_eq!(
            files["muster-agent-linux-x86_64"].sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let missing = Downloads::load(&dir.path().join("nope"), None).expect("missing dir");
        assert!(missing.names().is_empty());
    }

    #[test]
    fn the_agent_beside_the_server_is_served_for_its_platform_and_late_files_are_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let beside = dir.path().join("muster-agent");
        std::fs::write(&beside, b"abc").expect("write");
        let downloads = dir.path().join("downloads");
        let absent = Downloads::load(&downloads, Some(dir.path().join("nothing"))).expect("load");
        assert!(absent.names().is_empty());
        let d = Downloads::load(&downloads, Some(beside)).expect("load");
        let own = own_platform_name();
        assert_eq!(d.names(), [own]);
        assert!(d.get("muster-agent-linux-riscv64").expect("get").is_none());
        std::fs::create_dir_all(&downloads).expect("mkdir");
        std::fs::write(downloads.join("muster-agent-linux-riscv64"), b"rv").expect("write");
        let late = d
            .get("muster-agent-linux-riscv64")
            .expect("get")
            .expect("found without a restart");
        assert_eq!(&late.bytes[..], b"rv");
        assert_eq!(d.names().len(), 2);
    }
}
