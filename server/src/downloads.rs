//! The agent binaries served at `/v1/download/`: the `muster-agent-<os>-<arch>`
//! files of the downloads dir and the agent beside the server's executable,
//! each read and hashed once, when first asked for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use axum::body::Bytes;

/// Largest file served from the downloads dir.
const MAX_DOWNLOAD_BYTES: u64 = 256 * 1024 * 1024;

/// One file served under `/v1/download/`.
#[derive(Clone, Debug)]
pub struct Download {
    pub bytes: Bytes,
    /// Hex SHA-256 of `bytes`.
    pub sha256: String,
}

/// The agent binaries: the `muster-agent-<os>-<arch>` files of the
/// downloads dir, plus the `muster-agent` beside the server's own executable
/// as the agent for the server's platform (unless the dir has one). Each is
/// read once, when first asked for, and then served from memory, so that a
/// file and its published hash always agree; a name not known yet is looked
/// for again on disk, so an agent built or copied in after start-up is served
/// without a restart. Replacing a file needs a restart.
#[derive(Debug, Default)]
pub struct Downloads {
    pub dir: PathBuf,
    /// Where the agent beside the server's executable would be.
    pub beside: Option<PathBuf>,
    files: RwLock<BTreeMap<String, Entry>>,
}

#[derive(Clone, Debug)]
enum Entry {
    OnDisk(PathBuf),
    Loaded(Download),
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

/// The download name of the agent for the platform this server runs on.
pub fn own_platform_name() -> String {
    format!(
        "muster-agent-{}-{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Where `muster-agent` would be beside this process's executable.
pub fn agent_beside_executable() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(
        exe.parent()?
            .join(format!("muster-agent{}", std::env::consts::EXE_SUFFIX)),
    )
}

impl Downloads {
    /// Finds every `muster-agent-<os>-<arch>` file in `dir` (other files are
    /// ignored; a missing dir has none) and `beside` as the agent for this
    /// platform when `dir` has none.
    pub fn load(dir: &Path, beside: Option<PathBuf>) -> Result<Downloads, DownloadsError> {
        let downloads = Downloads {
            dir: dir.to_path_buf(),
            beside,
            files: RwLock::default(),
        };
        downloads.refresh()?;
        Ok(downloads)
    }

    /// Looks for files not known yet; returns how many there are now.
    pub fn refresh(&self) -> Result<usize, DownloadsError> {
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|error| DownloadsError::Read {
                        path: self.dir.clone(),
                        error,
                    })?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if is_download_name(&name) && entry.path().is_file() {
                        found.push((name, entry.path()));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(DownloadsError::Read {
                    path: self.dir.clone(),
                    error,
                })
            }
        }
        let own = own_platform_name();
        if let Some(beside) = self.beside.as_ref().filter(|b| b.is_file()) {
            if !found.iter().any(|(name, _)| *name == own) {
                found.push((own, beside.clone()));
            }
        }
        let mut files = self.files.write().expect("downloads lock");
        for (name, path) in found {
            files.entry(name).or_insert(Entry::OnDisk(path));
        }
        Ok(files.len())
    }

    /// The file called `name`, looking again on disk when it is not known.
    pub fn get(&self, name: &str) -> Result<Option<Download>, DownloadsError> {
        if !self
            .files
            .read()
            .expect("downloads lock")
            .contains_key(name)
        {
            self.refresh()?;
        }
        let mut files = self.files.write().expect("downloads lock");
        let Some(entry) = files.get_mut(name) else {
            return Ok(None);
        };
        if let Entry::OnDisk(path) = entry {
            *entry = Entry::Loaded(read_download(path)?);
        }
        match entry {
            Entry::Loaded(d) => Ok(Some(d.clone())),
            Entry::OnDisk(_) => unreachable!("loaded above"),
        }
    }

    /// The names known, sorted.
    pub fn names(&self) -> Vec<String> {
        self.files
            .read()
            .expect("downloads lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Every file, read (once) if need be, sorted by name.
    pub fn files(&self) -> Result<BTreeMap<String, Download>, DownloadsError> {
        let mut out = BTreeMap::new();
        for name in self.names() {
            if let Some(d) = self.get(&name)? {
                out.insert(name, d);
            }
        }
        Ok(out)
    }
}

fn read_download(path: &Path) -> Result<Download, DownloadsError> {
    let read_error = |error| DownloadsError::Read {
        path: path.to_path_buf(),
        error,
    };
    let len = std::fs::metadata(path).map_err(read_error)?.len();
    if len > MAX_DOWNLOAD_BYTES {
        return Err(DownloadsError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    let sha256 = crate::ca::sha256_hex(&bytes);
    Ok(Download {
        bytes: Bytes::from(bytes),
        sha256,
    })
}
