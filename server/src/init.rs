//! `muster-server init`: creates a data dir — CA, server certificate,
//! settings, database, first admin token, targets dir — and refuses to touch
//! one that already holds any of them.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use muster_shared::pin::Pin;

use crate::ca::{self, Ca, CaError};
use crate::machine::{Machine, DEFAULT_AGENT_PORT};
use crate::settings::{self, Settings};
use crate::store::{self, Store, StoreError};
use crate::tokens::Secret;

/// File holding the first admin token (mode 0600), read by the admin CLI.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{} already exists: refusing to overwrite an existing data dir", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Initialized {
    pub pin: Pin,
    pub admin_token: Secret,
    pub public_url: String,
}

/// Whether `dir` holds an initialised data dir.
pub fn is_initialized(dir: &Path) -> bool {
    dir.join(settings::FILE_NAME).exists()
}

/// Creates everything in `dir`. The server certificate names `sans` and
/// everything `machine` is called (hostname, FQDN, non-loopback addresses)
/// besides localhost. `public_url` defaults to `https://<first SAN>:8443`,
/// else to the URL of the machine's primary address.
pub fn init(
    dir: &Path,
    sans: &[String],
    public_url: Option<String>,
    machine: &Machine,
    now: SystemTime,
) -> Result<Initialized, InitError> {
    for name in [
        settings::FILE_NAME,
        ca::CA_KEY,
        ca::CA_CERT,
        ca::SERVER_KEY,
        ca::SERVER_CERT,
        store::FILE_NAME,
        ADMIN_TOKEN_FILE,
    ] {
        let path = dir.join(name);
        if path.exists() {
            return Err(InitError::Exists(path));
        }
    }
    create_private_dir(dir)?;
    let public_url = public_url.unwrap_or_else(|| match sans.first() {
        Some(host) if host.contains(':') => format!("https://[{host}]:{DEFAULT_AGENT_PORT}"),
        Some(host) => format!("https://{host}:{DEFAULT_AGENT_PORT}"),
        None => machine.public_url(),
    });
    let mut all_sans = sans.to_vec();
    all_sans.extend(machine.sans());
    let settings_text = Settings::default_file(&public_url);
    // Check what we write parses, before anything is created.
    Settings::from_toml(&settings_text).map_err(|message| InitError::Io {
        path: dir.join(settings::FILE_NAME),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
    })?;

    let ca = Ca::create(dir, now)?;
    let pin = ca.issue_server_cert(dir, &all_sans, now)?;
    let store = Store::open(&dir.join(store::FILE_NAME))?;
    let unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let admin_token = store.create_admin_token("initial", unix)?;
    write_new(
        &dir.join(ADMIN_TOKEN_FILE),
        admin_token.expose().as_bytes(),
        0o600,
    )?;
    write_new(
        &dir.join(settings::FILE_NAME),
        settings_text.as_bytes(),
        0o644,
    )?;
    let targets = dir.join("targets");
    std::fs::create_dir_all(&targets).map_err(|source| InitError::Io {
        path: targets,
        source,
    })?;
    Ok(Initialized {
        pin,
        admin_token,
        public_url,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), InitError> {
    let io = |source| InitError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if dir.exists() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).map_err(io)
    }
}

/// Creates `path` (never overwriting) with `mode` from the start.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InitError> {
    ca::create_file(path, bytes, mode).map_err(|source| InitError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn init_creates_everything_and_refuses_to_run_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let machine = Machine {
            hostname: Some("muster".into()),
            fqdn: Some("muster.lan.example".into()),
            addresses: vec!["10.1.2.3".parse().expect("ip")],
        };
        let done = init(
            &data,
            &["muster.example".into()],
            None,
            &machine,
            SystemTime::now(),
        )
        .expect("init");
        assert_eq!(done.public_url, "https://muster.example:8443");
        let pem = std::fs::read(data.join(ca::SERVER_CERT)).expect("server.crt");
        let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).expect("PEM");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("X.509");
        let sans = format!("{:?}", cert.subject_alternative_name());
        for name in [
            "muster.example",
            "muster.lan.example",
            "\"muster\"",
            "localhost",
        ] {
            assert!(sans.contains(name), "{name} missing from {sans}");
        }
        assert!(
            sans.contains("[10, 1, 2, 3]"),
            "the machine's address: {sans}"
        );
        assert!(done.admin_token.expose().starts_with("mta_"));
        assert!(is_initialized(&data));
        let saved = std::fs::read_to_string(data.join(ADMIN_TOKEN_FILE)).expect("token file");
        assert_eq!(saved, done.admin_token.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &str| {
                std::fs::metadata(data.join(p))
                    .expect("meta")
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!(mode(ADMIN_TOKEN_FILE), 0o600);
            assert_eq!(mode(ca::CA_KEY), 0o600);
            assert_eq!(mode(ca::SERVER_KEY), 0o600);
        }
        let settings_before = std::fs::read(data.join(settings::FILE_NAME)).expect("settings");
        let again = init(&data, &[], None, &machine, SystemTime::now());
        assert!(matches!(again, Err(InitError::Exists(_))));
        assert_eq!(
            std::fs::read(data.join(settings::FILE_NAME)).expect("settings"),
            settings_before
        );
        let store = Store::open(&data.join(store::FILE_NAME)).expect("db");
        assert_eq!(
            store
                .verify_admin_token(done.admin_token.expose())
                .expect("lookup"),
            Some("initial".to_string())
        );
    }

    #[test]
    fn without_names_the_public_url_is_the_machines_primary_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let machine = Machine {
            hostname: Some("bare".into()),
            fqdn: None,
            addresses: vec!["192.0.2.7".parse().expect("ip")],
        };
        let done = init(dir.path(), &[], None, &machine, SystemTime::now()).expect("init");
        assert_eq!(done.public_url, "https://192.0.2.7:8443");
        let settings = std::fs::read_to_string(dir.path().join(settings::FILE_NAME)).expect("toml");
        assert!(
            settings.contains("public_url = \"https://192.0.2.7:8443\""),
            "{settings}"
        );
    }
}
