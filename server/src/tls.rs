//! rustls server configurations for the server's two listeners (agents, admin), always on the
//! ring crypto provider, and the certificate fingerprint agents are looked up by.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::ca::{SERVER_CERT, SERVER_KEY};

/// The only application protocol the listeners speak.
const ALPN_HTTP1: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: malformed PEM", path.display())]
    BadPem {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("{}: no CERTIFICATE PEM block found", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no private key PEM block found", path.display())]
    NoKey { path: PathBuf },
    #[error("the CA certificate is not usable as a trust anchor")]
    BadCa(#[source] rustls::Error),
    #[error("could not build the client-certificate verifier")]
    Verifier(#[from] VerifierBuilderError),
    /// Also the error for a key that does not belong to the certificate.
    #[error("could not build the TLS configuration from {SERVER_CERT} and {SERVER_KEY}")]
    Config(#[source] rustls::Error),
}

/// The agent listener: `server.crt`/`server.key` from `data_dir`. Client certificates are
/// optional (`/v1/enroll` and `/install.sh` are reached without one) but, when presented, must
/// chain to the Muster CA `ca_der` or the handshake fails; agent routes check per request that
/// one was presented, and whether its serial is revoked (no CRLs here: revocation lives in the
/// store). ALPN http/1.1.
pub fn agent_listener_config(
    data_dir: &Path,
    ca_der: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(TlsError::BadCa)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let (chain, key) = read_identity(data_dir)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    // Stateless TLS 1.3 session tickets (keys rotated every 6 h, tickets
    // valid 12 h): a reconnecting agent resumes without a certificate
    // signature and verification, however many agents there are (the
    // default stateful cache holds 256 sessions). A resumed session keeps
    // its client certificate; revocation and expiry are checked per request.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Config)?;
    Ok(Arc::new(config))
}

/// The admin listener: the same server certificate, no client authentication (admins use
/// bearer tokens). ALPN http/1.1.
pub fn admin_listener_config(data_dir: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key) = read_identity(data_dir)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// Lowercase hex SHA-256 of a DER certificate: the same fingerprint
/// [`crate::ca::IssuedCert`] carries.
pub fn fingerprint(der: &[u8]) -> String {
    crate::ca::sha256_hex(der)
}

/// Always ring, named explicitly: never whatever provider the process installed as default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's certificate chain (leaf first) and private key.
fn read_identity(
    data_dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_path = data_dir.join(SERVER_CERT);
    let key_path = data_dir.join(SERVER_KEY);

    let cert_pem = read(&cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadPem {
            path: cert_path.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }

    let key_pem = read(&key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: key_path.clone(),
        },
        source => TlsError::BadPem {
            path: key_path.clone(),
            source,
        },
    })?;
    Ok((chain, key))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::Ca;
    use muster_shared::pin::Pin;
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
    use rustls::pki_types::ServerName;
    use rustls::ClientConfig;
    use std::time::{Duration, SystemTime};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    const MONTH: Duration = Duration::from_secs(30 * 24 * 60 * 60);

    /// A data dir with a CA and a server certificate, as the server leaves it on first start.
    fn data_dir() -> (tempfile::TempDir, Ca, Pin) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(dir.path(), SystemTime::now()).unwrap();
        let pin = ca
            .issue_server_cert(dir.path(), &[], SystemTime::now())
            .unwrap();
        (dir, ca, pin)
    }

    /// What an agent holds after enrolling with `ca`: its certificate and key.
    fn agent_identity(ca: &Ca) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let issued = ca
            .sign_csr(&csr, "h-agent", SystemTime::now(), MONTH)
            .unwrap();
        let cert = CertificateDer::from_pem_slice(issued.pem.as_bytes()).unwrap();
        (
            vec![cert],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
    }

    fn client_config(
        ca: &Ca,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der().to_vec()))
            .unwrap();
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Arc::new(config)
    }

    struct Outcome {
        /// The server side: the client's certificates, if the handshake succeeded.
        server: io::Result<Option<Vec<CertificateDer<'static>>>>,
        /// The client side: the server's leaf certificate, if it got the server's greeting.
        client: io::Result<CertificateDer<'static>>,
    }

    /// One connection over loopback: the server accepts, records the peer certificates and
    /// writes a greeting; the client connects and reads it.
    async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(server);
        let server_side = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_HTTP1));
            let peer = tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
            tls.write_all(b"hello").await?;
            tls.shutdown().await?;
            Ok::<_, io::Error>(peer)
        });

        let client_side = async {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
            let mut greeting = Vec::new();
            tls.read_to_end(&mut greeting).await?;
            if greeting != b"hello" {
                return Err(io::Error::other(format!("greeting {greeting:?}")));
            }
            let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            Ok::<_, io::Error>(leaf)
        };
        let client = client_side.await;
        let server = server_side.await.unwrap();
        Outcome { server, client }
    }

    #[tokio::test]
    async fn accepts_an_agent_certificate_from_our_ca_and_shows_it_to_the_server() {
        let (dir, ca, pin) = data_dir();
        let (chain, key) = agent_identity(&ca);
        let agent_cert = chain[0].clone();
        let server = agent_listener_config(dir.path(), ca.cert_der()).unwrap();
        let outcome = handshake(server, client_config(&ca, Some((chain, key)))).await;

        let peer = outcome.server.unwrap().expect("a client certificate");
        assert_eq!(peer, vec![agent_cert.clone()]);
        assert_eq!(fingerprint(&peer[0]), fingerprint(&agent_cert));

        // The pin the server prints is the pin of the certificate it serves.
        let served = outcome.client.unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&served).unwrap();
        assert_eq!(Pin::of_spki(leaf.public_key().raw), pin);
        assert_eq!(crate::ca::server_pin(dir.path()).unwrap(), pin);
    }

    #[test]
    fn the_agent_listener_issues_stateless_session_tickets() {
        let (dir, ca, _) = data_dir();
        let server = agent_listener_config(dir.path(), ca.cert_der()).unwrap();
        // Not the default (no tickets: only the 256-entry stateful cache).
        assert!(server.ticketer.enabled());
        assert!(server.send_tls13_tickets > 0);
    }

    #[tokio::test]
    async fn accepts_a_client_without_a_certificate() {
        let (dir, ca, _) = data_dir();
        let server = agent_listener_config(dir.path(), ca.cert_der()).unwrap();
        let outcome = handshake(server, client_config(&ca, None)).await;
        assert_eq!(outcome.server.unwrap(), None);
        outcome.client.unwrap();
    }

    #[tokio::test]
    async fn refuses_a_client_certificate_from_another_ca() {
        let (dir, ca, _) = data_dir();
        let other_dir = tempfile::tempdir().unwrap();
        let other_ca = Ca::create(other_dir.path(), SystemTime::now()).unwrap();
        let server = agent_listener_config(dir.path(), ca.cert_der()).unwrap();
        let outcome = handshake(server, client_config(&ca, Some(agent_identity(&other_ca)))).await;

        let err = outcome.server.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // Every Muster CA is named "Muster CA", so webpki finds the name and then rejects the
        // signature (BadSignature rather than UnknownIssuer).
        assert!(
            err.to_string().contains("invalid peer certificate"),
            "{err}"
        );
        // With TLS 1.3 the client finishes its half before the server checks its certificate,
        // so it learns of the refusal from the alert instead of the greeting.
        assert!(outcome.client.is_err());
    }

    #[tokio::test]
    async fn admin_listener_serves_the_same_certificate_without_asking_for_one() {
        let (dir, ca, pin) = data_dir();
        let server = admin_listener_config(dir.path()).unwrap();
        // A client certificate offered to the admin listener is not even requested.
        let outcome = handshake(server, client_config(&ca, Some(agent_identity(&ca)))).await;
        assert_eq!(outcome.server.unwrap(), None);
        let served = outcome.client.unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&served).unwrap();
        assert_eq!(Pin::of_spki(leaf.public_key().raw), pin);
    }

    #[test]
    fn reports_missing_and_mismatched_files_with_their_paths() {
        let empty = tempfile::tempdir().unwrap();
        let err = admin_listener_config(empty.path()).unwrap_err();
        assert!(
            matches!(&err, TlsError::Io { path, .. } if path.ends_with(SERVER_CERT)),
            "{err:?}"
        );

        let (dir, ca, _) = data_dir();
        let (other, _, _) = data_dir();
        fs::remove_file(dir.path().join(SERVER_KEY)).unwrap();
        fs::copy(other.path().join(SERVER_KEY), dir.path().join(SERVER_KEY)).unwrap();
        let err = agent_listener_config(dir.path(), ca.cert_der()).unwrap_err();
        assert!(matches!(err, TlsError::Config(_)), "{err:?}");

        fs::write(dir.path().join(SERVER_KEY), "no key here").unwrap();
        let err = admin_listener_config(dir.path()).unwrap_err();
        assert!(
            matches!(&err, TlsError::NoKey { path } if path.ends_with(SERVER_KEY)),
            "{err:?}"
        );

        let err = agent_listener_config(dir.path(), b"not a certificate").unwrap_err();
        assert!(matches!(err, TlsError::BadCa(_)), "{err:?}");
    }

    #[test]
    fn fingerprint_is_lowercase_hex_sha256() {
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn an_issued_certificate_is_found_by_the_fingerprint_tls_computes() {
        let (_dir, ca, _) = data_dir();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let issued = ca
            .sign_csr(&csr, "web-01-abc123", SystemTime::now(), MONTH)
            .unwrap();
        let der = rustls_pemfile::certs(&mut issued.pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(issued.fingerprint, fingerprint(&der));
    }
}
