//! The server's private CA: creates and loads `ca.key`/`ca.crt`, issues the server's own TLS
//! certificate and signs agent CSRs. File IO happens only in `create`, `load`,
//! `issue_server_cert` and `server_pin`; signing a CSR is pure.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use muster_shared::pin::Pin;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::error::X509Error;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

pub const CA_KEY: &str = "ca.key";
pub const CA_CERT: &str = "ca.crt";
pub const SERVER_KEY: &str = "server.key";
pub const SERVER_CERT: &str = "server.crt";

/// The largest CSR `sign_csr` reads. A P-384 CSR in PEM is well under 1 KiB.
pub const MAX_CSR_PEM: usize = 16 * 1024;

const CA_COMMON_NAME: &str = "Muster CA";
const SERVER_COMMON_NAME: &str = "Muster server";
const DAY: u64 = 24 * 60 * 60;
const CA_VALIDITY: Duration = Duration::from_secs(3650 * DAY);
const SERVER_VALIDITY: Duration = Duration::from_secs(730 * DAY);
/// Certificates start a little in the past, so a peer whose clock lags ours still accepts them.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// 9999-12-31T23:59:59Z, the last instant an X.509 GeneralizedTime can express.
const MAX_X509_TIME: i64 = 253_402_300_799;
/// Names the server certificate always carries, so local tools and tests can connect.
const ALWAYS_SANS: [&str; 2] = ["localhost", "127.0.0.1"];

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("could not access {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("{}: no {what} PEM block found", path.display())]
    BadPem { path: PathBuf, what: &'static str },
    #[error("{}: not a usable private key", path.display())]
    BadKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{}: not a usable certificate: {reason}", path.display())]
    BadCert { path: PathBuf, reason: String },
    #[error("{} does not hold the key of the certificate in {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{0:?} is neither an IP address nor a valid DNS name")]
    BadName(String),
    #[error("the clock is outside the range a certificate can express")]
    Clock,
    #[error("the system random number generator failed")]
    Random,
    #[error("could not generate a key or certificate")]
    Cert(#[from] rcgen::Error),
}

/// Why an agent's CSR was refused. All but [`CsrError::Sign`] and [`CsrError::Random`] are the
/// agent's fault (see [`CsrError::is_bad_request`]).
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is larger than {MAX_CSR_PEM} bytes")]
    TooLarge,
    #[error("no PEM \"CERTIFICATE REQUEST\" block found")]
    NotACsr,
    #[error("the CSR's PEM is malformed: {0}")]
    BadPem(String),
    #[error("the CSR is not a valid PKCS#10 request")]
    Malformed,
    #[error("unsupported key ({0}): only ECDSA P-256, ECDSA P-384 and Ed25519 keys are accepted")]
    UnsupportedKey(String),
    #[error("the CSR is signed with an unsupported signature algorithm")]
    UnsupportedSignature,
    #[error("the CSR's self-signature does not verify")]
    BadSignature,
    #[error("the requested validity is outside the range a certificate can express")]
    Validity,
    #[error("the system random number generator failed")]
    Random,
    #[error("could not sign the certificate")]
    Sign(#[source] rcgen::Error),
}

impl CsrError {
    /// Whether the request was at fault (HTTP 400) rather than the server (HTTP 500).
    pub fn is_bad_request(&self) -> bool {
        !matches!(self, CsrError::Random | CsrError::Sign(_))
    }
}

/// A certificate `sign_csr` issued to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    pub pem: String,
    /// Lowercase hex SHA-256 of the certificate DER, as the TLS layer computes it for a presented certificate.
    pub fingerprint: String,
    /// Lowercase hex of the serial number's 16 bytes.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    /// Lowercase hex SHA-256 of the agent's SubjectPublicKeyInfo DER.
    pub public_key_sha256: String,
}

/// The server's CA: its certificate and the key that signs with it.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &sha256_hex(&self.cert_der))
            .field("key", &"***")
            .finish()
    }
}

impl Ca {
    /// Creates `ca.key` (mode 0600, created with that mode) and `ca.crt` (0644) in `dir`, which
    /// must exist: ECDSA P-256, CN "Muster CA", valid for 10 years, a CA that may sign end
    /// entities only (path length 0). Refuses with [`CaError::Exists`] if either file exists.
    pub fn create(dir: &Path, now: SystemTime) -> Result<Ca, CaError> {
        let key_path = dir.join(CA_KEY);
        let cert_path = dir.join(CA_CERT);
        refuse_existing(&[&key_path, &cert_path])?;

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(CA_COMMON_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(SerialNumber::from_slice(
            &random_serial().ok_or(CaError::Random)?,
        ));
        set_validity(&mut params, now, CA_VALIDITY).ok_or(CaError::Clock)?;
        let cert = params.self_signed(&key)?;

        let cert_der = cert.der().clone();
        let cert_pem = pem_encode("CERTIFICATE", &cert_der);
        write_pair(
            &key_path,
            key.serialize_pem().as_bytes(),
            &cert_path,
            cert_pem.as_bytes(),
        )?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(Ca {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    /// Loads the CA `create` wrote in `dir`, checking that the key belongs to the certificate.
    pub fn load(dir: &Path) -> Result<Ca, CaError> {
        let key_path = dir.join(CA_KEY);
        let cert_path = dir.join(CA_CERT);

        let key_pem = read_to_string(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| CaError::BadKey {
            path: key_path.clone(),
            source,
        })?;
        let cert_der = read_first_cert(&cert_path)?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| CaError::BadCert {
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;
        if !x509.is_ca() {
            return Err(CaError::BadCert {
                path: cert_path,
                reason: "not a CA certificate".into(),
            });
        }
        if x509.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CaError::KeyMismatch {
                key: key_path,
                cert: cert_path,
            });
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CaError::BadCert {
            path: cert_path,
            reason: e.to_string(),
        })?;
        Ok(Ca {
            cert_pem: pem_encode("CERTIFICATE", &cert_der),
            cert_der,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Writes `server.key` (0600) and `server.crt` (0644), a leaf signed by this CA: ECDSA
    /// P-256, serverAuth, valid for 2 years, with a SAN for each of `sans` (IP addresses become
    /// IP SANs, anything else must be a valid DNS name) plus "localhost" and "127.0.0.1",
    /// deduplicated. Refuses to overwrite either file. Returns the pin of the server's key.
    pub fn issue_server_cert(
        &self,
        dir: &Path,
        sans: &[String],
        now: SystemTime,
    ) -> Result<Pin, CaError> {
        let key_path = dir.join(SERVER_KEY);
        let cert_path = dir.join(SERVER_CERT);
        let names = server_sans(sans)?;
        refuse_existing(&[&key_path, &cert_path])?;

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(SERVER_COMMON_NAME);
        params.subject_alt_names = names;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(
            &random_serial().ok_or(CaError::Random)?,
        ));
        set_validity(&mut params, now, SERVER_VALIDITY).ok_or(CaError::Clock)?;
        let cert = params.signed_by(&key, &self.issuer)?;

        write_pair(
            &key_path,
            key.serialize_pem().as_bytes(),
            &cert_path,
            pem_encode("CERTIFICATE", cert.der()).as_bytes(),
        )?;
        Ok(Pin::of_spki(&key.subject_public_key_info()))
    }

    /// Signs an agent's CSR (PEM PKCS#10) after verifying its self-signature.
    ///
    /// Everything the CSR asks for besides its public key (subject, SANs, extensions) is
    /// ignored: the certificate has subject CN = `host_id`, the clientAuth EKU only, is not a CA,
    /// has a random positive 16-byte serial, and is valid from `now` - 5 min to
    /// `now + validity`. Only ECDSA P-256 / P-384 (uncompressed points) and Ed25519 keys are
    /// accepted: RSA is refused outright, since our agents never make such keys.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        host_id: &str,
        now: SystemTime,
        validity: Duration,
    ) -> Result<IssuedCert, CsrError> {
        self.sign_verified(&verify_csr(csr_pem)?, host_id, now, validity)
    }

    /// [`Ca::sign_csr`] for a request [`verify_csr`] checked already (the
    /// enrollment checks it, and knows the key, before choosing the host).
    pub fn sign_verified(
        &self,
        csr: &VerifiedCsr,
        host_id: &str,
        now: SystemTime,
        validity: Duration,
    ) -> Result<IssuedCert, CsrError> {
        let serial = random_serial().ok_or(CsrError::Random)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(host_id);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let not_after = set_validity(&mut params, now, validity).ok_or(CsrError::Validity)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(CsrError::Sign)?;

        Ok(IssuedCert {
            pem: pem_encode("CERTIFICATE", cert.der()),
            fingerprint: sha256_hex(cert.der()),
            serial: hex(&serial),
            not_after,
            public_key_sha256: csr.public_key_sha256.clone(),
        })
    }
}

/// A certificate request whose PEM, structure, key type and signature were
/// checked (see [`Ca::sign_csr`] for what is accepted).
pub struct VerifiedCsr {
    public_key: rcgen::SubjectPublicKeyInfo,
    /// Hex SHA-256 of the request's SubjectPublicKeyInfo.
    pub public_key_sha256: String,
}

/// Checks a PEM certificate request without signing anything.
pub fn verify_csr(csr_pem: &str) -> Result<VerifiedCsr, CsrError> {
    if csr_pem.len() > MAX_CSR_PEM {
        return Err(CsrError::TooLarge);
    }
    let der =
        CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|e| match e {
            pem::Error::NoItemsFound => CsrError::NotACsr,
            other => CsrError::BadPem(other.to_string()),
        })?;
    let (public_key, spki_der) = verified_public_key(&der)?;
    Ok(VerifiedCsr {
        public_key,
        public_key_sha256: sha256_hex(&spki_der),
    })
}

/// The pin of the (first) certificate stored in `dir/server.crt`.
pub fn server_pin(dir: &Path) -> Result<Pin, CaError> {
    let path = dir.join(SERVER_CERT);
    let der = read_first_cert(&path)?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).map_err(|e| CaError::BadCert {
        path,
        reason: e.to_string(),
    })?;
    Ok(Pin::of_spki(x509.public_key().raw))
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest(&SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// 16 random bytes that DER-encode as a positive INTEGER of exactly 16 bytes: the top bit is
/// clear (positive) and the next one set (no leading zero byte to strip).
fn random_serial() -> Option<[u8; 16]> {
    let mut serial = [0u8; 16];
    SystemRandom::new().fill(&mut serial).ok()?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Some(serial)
}

/// Sets `not_before = now - BACKDATE` and `not_after = now + validity`; returns `not_after` in
/// Unix seconds, or `None` if either end is outside what X.509 (and `time`) can express.
fn set_validity(
    params: &mut CertificateParams,
    now: SystemTime,
    validity: Duration,
) -> Option<i64> {
    let not_before = now.checked_sub(BACKDATE)?;
    let not_after = now.checked_add(validity)?;
    // Refusing times before 1970 and after 9999 keeps the `into()` conversions below (which
    // panic out of range) safe.
    let not_before_secs =
        i64::try_from(not_before.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    let not_after_secs =
        i64::try_from(not_after.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    if not_after_secs > MAX_X509_TIME || not_before_secs > not_after_secs {
        return None;
    }
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    Some(not_after_secs)
}

fn server_sans(extra: &[String]) -> Result<Vec<SanType>, CaError> {
    let mut sans: Vec<SanType> = Vec::new();
    for name in extra.iter().map(|s| s.trim()).chain(ALWAYS_SANS) {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                // DNS names compare case-insensitively; lowercase them so duplicates collapse.
                let dns = rustls_pki_types::DnsName::try_from(name)
                    .ok()
                    .and_then(|_| Ia5String::try_from(name.to_ascii_lowercase()).ok())
                    .ok_or_else(|| CaError::BadName(name.to_string()))?;
                SanType::DnsName(dns)
            }
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

/// Parses a DER CSR, checks its key type and verifies its self-signature. Returns the key in
/// the form rcgen signs for, and the CSR's SubjectPublicKeyInfo DER.
fn verified_public_key(der: &[u8]) -> Result<(rcgen::SubjectPublicKeyInfo, Vec<u8>), CsrError> {
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|_| CsrError::Malformed)?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed);
    }
    let spki = &csr.certification_request_info.subject_pki;
    check_key_type(spki)?;
    csr.verify_signature().map_err(|e| match e {
        X509Error::SignatureUnsupportedAlgorithm => CsrError::UnsupportedSignature,
        _ => CsrError::BadSignature,
    })?;
    let key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| CsrError::UnsupportedKey(e.to_string()))?;
    Ok((key, spki.raw.to_vec()))
}

fn check_key_type(spki: &SubjectPublicKeyInfo<'_>) -> Result<(), CsrError> {
    let alg = &spki.algorithm.algorithm;
    let key = &spki.subject_public_key.data;
    if *alg == OID_SIG_ED25519 {
        return match key.len() {
            32 => Ok(()),
            _ => Err(CsrError::UnsupportedKey("malformed Ed25519 key".into())),
        };
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        return Err(CsrError::UnsupportedKey("RSA".into()));
    }
    if *alg != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(CsrError::UnsupportedKey(format!(
            "key algorithm {}",
            alg.to_id_string()
        )));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let point_len = match curve {
        Some(c) if c == OID_EC_P256 => 65,
        Some(c) if c == OID_NIST_EC_P384 => 97,
        Some(c) => {
            return Err(CsrError::UnsupportedKey(format!(
                "EC key on curve {}",
                c.to_id_string()
            )))
        }
        None => {
            return Err(CsrError::UnsupportedKey(
                "EC key without a named curve".into(),
            ))
        }
    };
    // ring (and so rustls) only takes uncompressed points: 0x04 || x || y.
    if key.len() != point_len || key.first() != Some(&0x04) {
        return Err(CsrError::UnsupportedKey(
            "compressed or malformed EC point".into(),
        ));
    }
    Ok(())
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_to_string(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(io_error(path))
}

fn read_first_cert(path: &Path) -> Result<CertificateDer<'static>, CaError> {
    let text = read_to_string(path)?;
    CertificateDer::from_pem_slice(text.as_bytes()).map_err(|_| CaError::BadPem {
        path: path.to_path_buf(),
        what: "CERTIFICATE",
    })
}

fn refuse_existing(paths: &[&Path]) -> Result<(), CaError> {
    for path in paths {
        // symlink_metadata, so a dangling symlink counts as existing too.
        match fs::symlink_metadata(path) {
            Ok(_) => return Err(CaError::Exists(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(path)(e)),
        }
    }
    Ok(())
}

/// Writes a key and its certificate as new files. If the certificate cannot be written, the
/// key file just created is removed again, so a retry does not trip over half a pair.
fn write_pair(key_path: &Path, key: &[u8], cert_path: &Path, cert: &[u8]) -> Result<(), CaError> {
    write_new(key_path, key, 0o600)?;
    if let Err(e) = write_new(cert_path, cert, 0o644) {
        let _ = fs::remove_file(key_path);
        return Err(e);
    }
    Ok(())
}

/// Creates `path` (never overwriting) with `mode` on Unix from the start, so a key is never
/// readable by others, not even for an instant.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    create_file(path, contents, mode).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => CaError::Exists(path.to_path_buf()),
        _ => io_error(path)(e),
    })
}

/// Creates `path` with `contents`, failing if it exists, with `mode` from the start on Unix
/// (elsewhere the file inherits the data directory's ACL), and syncs it. Every secret the
/// server writes (keys, the first admin token) goes through here.
pub(crate) fn create_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::GeneralName;

    const HOST_ID: &str = "h-0123456789abcdef";
    const MONTH: Duration = Duration::from_secs(30 * DAY);

    // `openssl req -new -newkey rsa:2048 -subj /CN=rsa-agent`
    const OPENSSL_RSA_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIICWTCCAUECAQAwFDESMBAGA1UEAwwJcnNhLWFnZW50MIIBIjANBgkqhkiG9w0B
AQEFAAOCAQ8AMIIBCgKCAQEA2mbKNaZKZDZL0Jz+w6ybpwsGSDurtahrcudGNpgS
c0LczIwS3QLZMLP7Am+eUpOrzg0suObVe0o5ySBEX329hujBkyQB5qI9MSFiBsr/
J4Jc7anXAGBdkflmfNKfV9lHxhQoeuIgxksS0atsHssdq9YT9wUgK8mP3kkm5n/3
/ddaQ+bzdtPy0+HVsc3ukZ9WXylfUVgfGXp2XDwDmpfyxz2w29/jT1j0uRyC/WHq
j29JePmp/DwwnYEv/gjrI7U9sQhdwKfDf3oVA8ubwHv3zpm0H+ezxOdcrgfXTJiR
fjfCRfVWDXovuUv3ZwYJPVLyCL6R43Ga70lwTKmps712gwIDAQABoAAwDQYJKoZI
hvcNAQELBQADggEBAEF4z6lLFWQsUFILxo1SefPiKVXs2ZKyrUxsnNwedBjKe8nf
KvmRg/2smygwJXxmDpIIqnvcNramU1Y1vCKz4W6EF6JF88yHCVMdvMQA06Eq4jw9
e10tqPPzXIfTqsXsDozOC/thqSLRZdNS5LTe+HDUq9AMpWSYINmxV4KFUQVNwVkJ
CmBJn0hu4lpBFkzyIuOpfcNFd6i0i21Ce4ReoEd1lYtdkOaTPzpO9oyp0Ab7k3Lz
Ciz3lrAXBoGRSXZJARyFZdfPNQ0OhipnWJuD7oRsX8sxkE9yp3FZN02begGoakVS
rrNVh8PQ7wPTAm0dRGRNMsNICdFvDvLSs6sGDcQ=
-----END CERTIFICATE REQUEST-----
";

    // `openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-521 -subj /CN=p521`
    const OPENSSL_P521_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBUTCBtAIBADAPMQ0wCwYDVQQDDARwNTIxMIGbMBAGByqGSM49AgEGBSuBBAAj
A4GGAAQBJ6lz0F1GtWOQgnbjGzAClCznJ69CcmYExdrpbQtt7TVD0s6miLOca4Ip
WLbkPj/GWsYnNx0SF/VQR5GXXyDTTEEAEIEIn/GIasMCGmgUaByIHx3cl/bSPqU6
qrxlyoT60sJ+ciJ42ucWcGggXwGLyxLo9G8baaUxckUWZNixCcMC34KgADAKBggq
hkjOPQQDAgOBiwAwgYcCQQl9JGulQGGsGziv5rzh+ex6wSRhhz7IQ+mlVkKG9E7z
7tq25vqH+lnqRKgB6bDbn23aMHaoI3EdNbdJgAGq83IUAkIBL4pRelzT9KXo18FD
TOGhwCC17AbqEGN4Q4V8SQ1VGm8wohPmog2AN6GZn2zh+ISByxWB8PNmXw2iZEDe
FLqnbqE=
-----END CERTIFICATE REQUEST-----
";

    // A P-256 CSR asking for much more than it gets: `openssl req -new -newkey ec
    // -pkeyopt ec_paramgen_curve:P-256 -subj "/CN=evil/O=Evil Corp"
    // -addext subjectAltName=DNS:evil.example,IP:10.0.0.1
    // -addext basicConstraints=critical,CA:TRUE
    // -addext extendedKeyUsage=serverAuth,codeSigning -addext subjectKeyIdentifier=hash`
    const OPENSSL_GREEDY_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBXjCCAQQCAQAwIzENMAsGA1UEAwwEZXZpbDESMBAGA1UECgwJRXZpbCBDb3Jw
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEhL1KnMac8w6HukL3n5BiY9MSut6N
86AexdTHwoO63H1zSLFZVcAu32dVekQRq5Yq5Rb1E6zh7XR43QUpiBsjxqB/MH0G
CSqGSIb3DQEJDjFwMG4wHQYDVR0RBBYwFIIMZXZpbC5leGFtcGxlhwQKAAABMA8G
A1UdEwEB/wQFMAMBAf8wHQYDVR0lBBYwFAYIKwYBBQUHAwEGCCsGAQUFBwMDMB0G
A1UdDgQWBBRuC7y26najeOh8xhMIGH6skUs0uzAKBggqhkjOPQQDAgNIADBFAiB8
GE/wVCUEIgzRYiC2iM3wwCO1/aBSkxkuD4JVg562qQIhAL/2RnEPNQ6qXSLmHW7H
flM4XxyJp7IfwIzB9vp/gUe1
-----END CERTIFICATE REQUEST-----
";

    fn new_ca() -> (tempfile::TempDir, Ca) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(dir.path(), SystemTime::now()).unwrap();
        (dir, ca)
    }

    fn csr_for(key: &KeyPair) -> String {
        CertificateParams::default()
            .serialize_request(key)
            .unwrap()
            .pem()
            .unwrap()
    }

    fn unix(t: SystemTime) -> i64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn parse_pem_cert(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn ekus(cert: &X509Certificate<'_>) -> (bool, bool, bool) {
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        let others = eku.any || eku.code_signing || !eku.other.is_empty();
        (eku.server_auth, eku.client_auth, others)
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn create_writes_the_ca_and_server_files_with_private_keys_0600() {
        let (dir, ca) = new_ca();
        ca.issue_server_cert(dir.path(), &[], SystemTime::now())
            .unwrap();
        for name in [CA_KEY, CA_CERT, SERVER_KEY, SERVER_CERT] {
            assert!(dir.path().join(name).is_file(), "{name} missing");
        }
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir.path().join(CA_KEY)), 0o600);
            assert_eq!(mode(&dir.path().join(SERVER_KEY)), 0o600);
        }

        let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert!(cert.is_ca());
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "Muster CA");
        let validity = cert.validity();
        let years =
            (validity.not_after.timestamp() - validity.not_before.timestamp()) / (365 * 86400);
        assert_eq!(years, 10);
    }

    #[test]
    fn create_and_issue_never_overwrite() {
        let (dir, ca) = new_ca();
        ca.issue_server_cert(dir.path(), &[], SystemTime::now())
            .unwrap();
        let before: Vec<Vec<u8>> = [CA_KEY, CA_CERT, SERVER_KEY, SERVER_CERT]
            .iter()
            .map(|n| fs::read(dir.path().join(n)).unwrap())
            .collect();

        let err = Ca::create(dir.path(), SystemTime::now()).unwrap_err();
        assert!(
            matches!(&err, CaError::Exists(p) if p.ends_with(CA_KEY)),
            "{err:?}"
        );
        let err = ca
            .issue_server_cert(dir.path(), &[], SystemTime::now())
            .unwrap_err();
        assert!(
            matches!(&err, CaError::Exists(p) if p.ends_with(SERVER_KEY)),
            "{err:?}"
        );

        let after: Vec<Vec<u8>> = [CA_KEY, CA_CERT, SERVER_KEY, SERVER_CERT]
            .iter()
            .map(|n| fs::read(dir.path().join(n)).unwrap())
            .collect();
        assert_eq!(before, after);
    }

    #[test]
    fn create_refuses_when_only_the_certificate_exists() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CA_CERT), "operator's file").unwrap();
        let err = Ca::create(dir.path(), SystemTime::now()).unwrap_err();
        assert!(
            matches!(&err, CaError::Exists(p) if p.ends_with(CA_CERT)),
            "{err:?}"
        );
        assert!(!dir.path().join(CA_KEY).exists());
        assert_eq!(
            fs::read_to_string(dir.path().join(CA_CERT)).unwrap(),
            "operator's file"
        );
    }

    #[test]
    fn load_round_trips_and_signs_for_the_same_ca() {
        let (dir, created) = new_ca();
        let loaded = Ca::load(dir.path()).unwrap();
        assert_eq!(loaded.cert_pem(), created.cert_pem());
        assert_eq!(loaded.cert_der(), created.cert_der());
        assert_eq!(
            fs::read_to_string(dir.path().join(CA_CERT)).unwrap(),
            created.cert_pem()
        );

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let issued = loaded
            .sign_csr(&csr_for(&key), HOST_ID, SystemTime::now(), MONTH)
            .unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(created.cert_der()).unwrap();
        let der = parse_pem_cert(&issued.pem);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(leaf.issuer(), ca_cert.subject());
        leaf.verify_signature(Some(ca_cert.public_key())).unwrap();
    }

    #[test]
    fn load_reports_the_missing_file_and_a_foreign_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = Ca::load(dir.path()).unwrap_err();
        assert!(
            matches!(&err, CaError::Io { path, .. } if path.ends_with(CA_KEY)),
            "{err:?}"
        );

        let (dir_a, _) = new_ca();
        let (dir_b, _) = new_ca();
        fs::remove_file(dir_a.path().join(CA_KEY)).unwrap();
        fs::copy(dir_b.path().join(CA_KEY), dir_a.path().join(CA_KEY)).unwrap();
        let err = Ca::load(dir_a.path()).unwrap_err();
        assert!(matches!(err, CaError::KeyMismatch { .. }), "{err:?}");
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let (_dir, ca) = new_ca();
        let text = format!("{ca:?}");
        assert!(text.contains("***"), "{text}");
        assert!(!text.contains("PRIVATE"), "{text}");
    }

    #[test]
    fn server_cert_has_the_given_names_plus_localhost_once_each() {
        let (dir, ca) = new_ca();
        let sans = [
            "muster.example.com".to_string(),
            " Muster.Example.COM ".to_string(),
            "10.1.2.3".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ];
        let pin = ca
            .issue_server_cert(dir.path(), &sans, SystemTime::now())
            .unwrap();
        assert_eq!(server_pin(dir.path()).unwrap(), pin);

        let der = parse_pem_cert(&fs::read_to_string(dir.path().join(SERVER_CERT)).unwrap());
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(Pin::of_spki(cert.public_key().raw), pin);
        assert!(!cert.is_ca());
        assert_eq!(ekus(&cert), (true, false, false));
        let names: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*ip).unwrap()).to_string(),
                    _ => IpAddr::from(<[u8; 16]>::try_from(*ip).unwrap()).to_string(),
                },
                other => panic!("unexpected SAN {other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "muster.example.com",
                "10.1.2.3",
                "::1",
                "localhost",
                "127.0.0.1"
            ]
        );
        let validity = cert.validity();
        let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86400;
        assert_eq!(days, 730);
    }

    #[test]
    fn server_cert_refuses_a_bad_name_and_writes_nothing() {
        let (dir, ca) = new_ca();
        for bad in ["not a name", "", "under_score!.example"] {
            let err = ca
                .issue_server_cert(dir.path(), &[bad.to_string()], SystemTime::now())
                .unwrap_err();
            assert!(
                matches!(&err, CaError::BadName(n) if n == bad.trim()),
                "{err:?}"
            );
        }
        assert!(!dir.path().join(SERVER_KEY).exists());
        assert!(!dir.path().join(SERVER_CERT).exists());
    }

    #[test]
    fn signs_a_p256_csr_as_a_client_certificate_for_the_host() {
        let (_dir, ca) = new_ca();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let now = SystemTime::now();
        let issued = ca.sign_csr(&csr_for(&key), HOST_ID, now, MONTH).unwrap();

        let der = parse_pem_cert(&issued.pem);
        assert_eq!(issued.fingerprint, sha256_hex(&der));
        assert_eq!(issued.fingerprint.len(), 64);
        assert_eq!(
            issued.public_key_sha256,
            sha256_hex(&key.subject_public_key_info())
        );

        let (rest, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(rest.is_empty());
        let cns: Vec<&str> = cert
            .subject()
            .iter_common_name()
            .map(|cn| cn.as_str().unwrap())
            .collect();
        assert_eq!(cns, [HOST_ID]);
        assert_eq!(
            cert.subject().iter().count(),
            1,
            "only the CN in the subject"
        );
        assert_eq!(ekus(&cert), (false, true, false));
        assert!(!cert.is_ca());
        assert!(cert.subject_alternative_name().unwrap().is_none());
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );

        assert_eq!(cert.validity().not_before.timestamp(), unix(now) - 300);
        assert_eq!(cert.validity().not_after.timestamp(), unix(now + MONTH));
        assert_eq!(issued.not_after, unix(now + MONTH));

        assert_eq!(cert.raw_serial().len(), 16);
        assert!(cert.raw_serial()[0] < 0x80, "serial must be positive");
        assert_eq!(issued.serial, hex(cert.raw_serial()));
        assert_eq!(issued.serial.len(), 32);

        let again = ca.sign_csr(&csr_for(&key), HOST_ID, now, MONTH).unwrap();
        assert_ne!(
            again.serial, issued.serial,
            "serials are random, not derived from the key"
        );
        assert_eq!(again.public_key_sha256, issued.public_key_sha256);
    }

    #[test]
    fn signs_p384_and_ed25519_csrs() {
        let (_dir, ca) = new_ca();
        for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let key = KeyPair::generate_for(alg).unwrap();
            let issued = ca
                .sign_csr(&csr_for(&key), HOST_ID, SystemTime::now(), MONTH)
                .unwrap();
            assert_eq!(
                issued.public_key_sha256,
                sha256_hex(&key.subject_public_key_info())
            );
        }
    }

    #[test]
    fn ignores_everything_a_csr_asks_for_but_its_key() {
        let (_dir, ca) = new_ca();
        let issued = ca
            .sign_csr(OPENSSL_GREEDY_CSR, HOST_ID, SystemTime::now(), MONTH)
            .unwrap();
        let der = parse_pem_cert(&issued.pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.subject().to_string(), format!("CN={HOST_ID}"));
        assert!(!cert.is_ca());
        assert_eq!(ekus(&cert), (false, true, false));
        assert!(cert.subject_alternative_name().unwrap().is_none());
    }

    #[test]
    fn refuses_keys_other_than_p256_p384_and_ed25519() {
        let (_dir, ca) = new_ca();
        for (csr, what) in [
            (OPENSSL_RSA_CSR, "RSA"),
            (OPENSSL_P521_CSR, "curve 1.3.132.0.35"),
        ] {
            let err = ca
                .sign_csr(csr, HOST_ID, SystemTime::now(), MONTH)
                .unwrap_err();
            assert!(
                matches!(&err, CsrError::UnsupportedKey(m) if m.contains(what)),
                "{err:?}"
            );
            assert!(err.is_bad_request());
        }
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        let (_dir, ca) = new_ca();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let good = CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let mut flipped = good.der().to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        let mut truncated = good.der().to_vec();
        truncated.truncate(truncated.len() / 2);
        let mut trailing = good.der().to_vec();
        trailing.push(0);

        let bad_base64 =
            "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n";
        let unterminated = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n";
        let cases = [
            (String::new(), "NotACsr"),
            ("hello, I am a CSR".to_string(), "NotACsr"),
            (ca.cert_pem().to_string(), "NotACsr"),
            (bad_base64.to_string(), "BadPem"),
            (unterminated.to_string(), "BadPem"),
            (pem_encode("CERTIFICATE REQUEST", b"not DER"), "Malformed"),
            (pem_encode("CERTIFICATE REQUEST", &truncated), "Malformed"),
            (pem_encode("CERTIFICATE REQUEST", &trailing), "Malformed"),
            (pem_encode("CERTIFICATE REQUEST", &flipped), "BadSignature"),
            ("A".repeat(MAX_CSR_PEM + 1), "TooLarge"),
        ];
        for (csr, expected) in cases {
            let err = ca
                .sign_csr(&csr, HOST_ID, SystemTime::now(), MONTH)
                .unwrap_err();
            let variant = format!("{err:?}");
            assert!(variant.starts_with(expected), "{csr:.80}: {variant}");
            assert!(err.is_bad_request());
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn refuses_a_validity_no_certificate_can_express() {
        let (_dir, ca) = new_ca();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = csr_for(&key);
        for validity in [Duration::MAX, Duration::from_secs(10_000 * 365 * DAY)] {
            let err = ca
                .sign_csr(&csr, HOST_ID, SystemTime::now(), validity)
                .unwrap_err();
            assert!(matches!(err, CsrError::Validity), "{err:?}");
        }
        let err = ca.sign_csr(&csr, HOST_ID, UNIX_EPOCH, MONTH).unwrap_err();
        assert!(matches!(err, CsrError::Validity), "{err:?}");
    }
}
