//! The agent's identity in its state dir: its private key (made here, never
//! sent), its certificate, the Muster CA, `identity.json`, the pending
//! enrollment's idempotency key, and the certificate-validity arithmetic that
//! decides when to renew.

use std::io;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use crate::atomic_file::{create_atomic, write_atomic};

pub const KEY_FILE: &str = "agent.key";
pub const CERT_FILE: &str = "agent.crt";
pub const CA_FILE: &str = "ca.crt";
pub const IDENTITY_FILE: &str = "identity.json";
pub const ATTEMPT_FILE: &str = "enroll-attempt";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("{}: {problem}", path.display())]
    Invalid { path: PathBuf, problem: String },
    #[error("cannot make a key or certificate request: {0}")]
    Crypto(String),
    #[error("the server sent an unusable {what}: {problem}")]
    BadResponse { what: &'static str, problem: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |error| IdentityError::Io {
        path: path.to_owned(),
        error,
    }
}

/// What `identity.json` records about the enrollment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub host_id: String,
    pub server: String,
    /// Unix seconds.
    pub enrolled_at: i64,
}

/// Everything needed to talk to the server over mutual TLS.
pub struct Enrolled {
    pub identity: Identity,
    pub key: KeyPair,
    pub cert_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolled")
            .field("identity", &self.identity)
            .field("key", &"***")
            .finish_non_exhaustive()
    }
}

/// The state dir and the files in it.
#[derive(Clone, Debug)]
pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: &Path) -> StateDir {
        StateDir {
            dir: dir.to_owned(),
        }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates the state dir (mode 0700: it holds the private key).
    pub fn create(&self) -> Result<(), IdentityError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&self.dir).map_err(io_error(&self.dir))
    }

    /// The agent's key, generated (ECDSA P-256) and saved with mode 0600 on
    /// first use.
    pub fn load_or_generate_key(&self) -> Result<KeyPair, IdentityError> {
        self.create()?;
        let path = self.file(KEY_FILE);
        match self.load_key() {
            Err(IdentityError::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let key = KeyPair::generate().map_err(|e| IdentityError::Crypto(e.to_string()))?;
        // All or nothing: a crash here never leaves an empty or partial key
        // that every later start would refuse.
        let created =
            create_atomic(&path, key.serialize_pem().as_bytes(), 0o600).map_err(io_error(&path))?;
        if !created {
            // Another enroll won the race: use its key.
            return self.load_key();
        }
        Ok(key)
    }

    pub fn load_key(&self) -> Result<KeyPair, IdentityError> {
        let path = self.file(KEY_FILE);
        let pem = std::fs::read_to_string(&path).map_err(io_error(&path))?;
        KeyPair::from_pem(&pem).map_err(|e| IdentityError::Invalid {
            path,
            problem: format!("not a usable private key: {e}"),
        })
    }

    /// The idempotency key of the enrollment in progress: the one a crashed or
    /// timed-out attempt left, else a new random one (saved before use, so a
    /// retry after any failure presents the same key).
    pub fn attempt_key(&self) -> Result<String, IdentityError> {
        let path = self.file(ATTEMPT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) if is_attempt_key(text.trim()) => return Ok(text.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path)(e)),
        }
        let mut bytes = [0u8; 16];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| IdentityError::Crypto("no randomness from the OS".into()))?;
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_atomic(&path, key.as_bytes(), 0o600).map_err(io_error(&path))?;
        Ok(key)
    }

    /// Forgets the idempotency key once the enrollment it belongs to succeeded.
    pub fn clear_attempt(&self) -> Result<(), IdentityError> {
        let path = self.file(ATTEMPT_FILE);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Stores what a successful enrollment returned. `identity.json` is written
    /// last: its presence means the certificate and CA beside it are complete.
    pub fn store_enrollment(
        &self,
        key: &KeyPair,
        identity: &Identity,
        cert_pem: &str,
        ca_pem: &str,
    ) -> Result<(), IdentityError> {
        if !muster_shared::facts::is_host_id(&identity.host_id) {
            return Err(IdentityError::BadResponse {
                what: "host id",
                problem: format!("{:?} is not a host id", identity.host_id),
            });
        }
        self.store_certificates(key, cert_pem, ca_pem)?;
        let json = serde_json::to_vec_pretty(identity)
            .map_err(|e| IdentityError::Crypto(e.to_string()))?;
        let path = self.file(IDENTITY_FILE);
        write_atomic(&path, &json, 0o644).map_err(io_error(&path))
    }

    /// Stores a new certificate (and the CA that came with it) after checking
    /// that it certifies our own key and that the CA parses.
    pub fn store_certificates(
        &self,
        key: &KeyPair,
        cert_pem: &str,
        ca_pem: &str,
    ) -> Result<(), IdentityError> {
        let cert = first_cert(cert_pem).map_err(|problem| IdentityError::BadResponse {
            what: "certificate",
            problem,
        })?;
        let spki = cert_spki(&cert).map_err(|problem| IdentityError::BadResponse {
            what: "certificate",
            problem,
        })?;
        if spki != key.subject_public_key_info() {
            return Err(IdentityError::BadResponse {
                what: "certificate",
                problem: "it is not for this agent's key".into(),
            });
        }
        first_cert(ca_pem).map_err(|problem| IdentityError::BadResponse {
            what: "CA certificate",
            problem,
        })?;
        for (name, pem) in [(CERT_FILE, cert_pem), (CA_FILE, ca_pem)] {
            let path = self.file(name);
            write_atomic(&path, pem.as_bytes(), 0o644).map_err(io_error(&path))?;
        }
        Ok(())
    }

    /// The stored identity, or `None` when this agent has not enrolled.
    pub fn load_identity(&self) -> Result<Option<Identity>, IdentityError> {
        let path = self.file(IDENTITY_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| IdentityError::Invalid {
                path,
                problem: e.to_string(),
            })
    }

    /// Everything needed for mutual TLS, or `None` when not enrolled.
    pub fn load(&self) -> Result<Option<Enrolled>, IdentityError> {
        let Some(identity) = self.load_identity()? else {
            return Ok(None);
        };
        let read = |name: &str| {
            let path = self.file(name);
            std::fs::read_to_string(&path).map_err(io_error(&path))
        };
        Ok(Some(Enrolled {
            identity,
            key: self.load_key()?,
            cert_pem: read(CERT_FILE)?,
            ca_pem: read(CA_FILE)?,
        }))
    }
}

fn is_attempt_key(text: &str) -> bool {
    (16..=64).contains(&text.len()) && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// A certificate request for `key`, with `common_name` as subject (the server
/// sets the real subject; this only makes the request self-describing).
pub fn csr_pem(key: &KeyPair, common_name: &str) -> Result<String, IdentityError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| IdentityError::Crypto(e.to_string()))
}

/// The key in the form rustls takes.
pub fn rustls_key(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// The first certificate in a PEM text.
pub fn first_cert(pem: &str) -> Result<CertificateDer<'static>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| "no PEM certificate found".to_string())?
        .map_err(|e| format!("bad PEM: {e}"))
}

/// The DER SubjectPublicKeyInfo of a certificate.
pub fn cert_spki(der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// A certificate's validity period, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    pub fn of_pem(pem: &str) -> Result<Validity, String> {
        let der = first_cert(pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let v = cert.validity();
        Ok(Validity {
            not_before: v.not_before.timestamp(),
            not_after: v.not_after.timestamp(),
        })
    }

    /// Renew when less than a third of the validity period is left.
    pub fn renew_due(&self, now: i64) -> bool {
        let total = i128::from(self.not_after) - i128::from(self.not_before);
        let left = i128::from(self.not_after) - i128::from(now);
        left * 3 < total
    }

    /// Whole days left (negative once expired).
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(key: &KeyPair) -> String {
        CertificateParams::new(vec!["agent".into()])
            .unwrap()
            .self_signed(key)
            .unwrap()
            .pem()
    }

    #[test]
    fn renews_when_less_than_a_third_is_left() {
        let v = Validity {
            not_before: 0,
            not_after: 30 * 86_400,
        };
        assert!(!v.renew_due(0));
        assert!(!v.renew_due(20 * 86_400 - 1)); // 10 days + 1 s left: exactly a third and a bit
        assert!(!v.renew_due(20 * 86_400)); // exactly a third left
        assert!(v.renew_due(20 * 86_400 + 1));
        assert!(v.renew_due(31 * 86_400)); // expired
        assert_eq!(v.days_left(20 * 86_400), 10);
        assert_eq!(v.days_left(31 * 86_400), -1);
    }

    #[test]
    fn the_key_is_made_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(&dir.path().join("state"));
        let key = state.load_or_generate_key().unwrap();
        let again = state.load_or_generate_key().unwrap();
        assert_eq!(key.public_key_raw(), again.public_key_raw());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(state.file(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let csr = csr_pem(&key, "web-01").unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        assert_eq!(
            parsed.public_key.subject_public_key_info(),
            key.subject_public_key_info()
        );
    }

    #[test]
    fn the_attempt_key_survives_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let first = state.attempt_key().unwrap();
        assert_eq!(state.attempt_key().unwrap(), first);
        state.clear_attempt().unwrap();
        state.clear_attempt().unwrap();
        assert_ne!(state.attempt_key().unwrap(), first);
    }

    #[test]
    fn stores_and_loads_an_enrollment_and_refuses_a_foreign_cert() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert!(state.load().unwrap().is_none());
        let key = state.load_or_generate_key().unwrap();
        let other = KeyPair::generate().unwrap();
        let identity = Identity {
            host_id: "web-01-abc123".into(),
            server: "https://muster:8443".into(),
            enrolled_at: 1_700_000_000,
        };
        let foreign =
            state.store_enrollment(&key, &identity, &self_signed(&other), &self_signed(&other));
        assert!(foreign
            .unwrap_err()
            .to_string()
            .contains("not for this agent's key"));
        assert!(state.load_identity().unwrap().is_none());

        let cert = self_signed(&key);
        state
            .store_enrollment(&key, &identity, &cert, &self_signed(&other))
            .unwrap();
        let loaded = state.load().unwrap().unwrap();
        assert_eq!(loaded.identity, identity);
        assert_eq!(loaded.cert_pem, cert);
        let v = Validity::of_pem(&loaded.cert_pem).unwrap();
        assert!(v.not_before < v.not_after);
    }
}
