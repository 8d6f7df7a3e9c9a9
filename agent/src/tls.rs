//! The agent's two TLS setups, both on the ring provider: pin-only trust for
//! the first contact (enrollment), and mutual TLS anchored on the Muster CA
//! for everything after.

use std::sync::{Arc, Mutex};

use muster_shared::pin::Pin;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::identity::{self, Enrolled};

/// A TLS setup that cannot be built (a bad certificate or key on disk).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS: {0}")]
pub struct TlsError(pub String);

/// The crypto provider every TLS config here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Trusts the server on first contact by its public-key pin alone, like
/// `curl -k --pinnedpubkey`: no CA, no name check, no expiry check, but the
/// handshake signatures are still verified, so only the holder of the pinned
/// key can complete the handshake (a copied certificate is not enough).
#[derive(Debug)]
pub struct PinVerifier {
    pin: Pin,
    provider: Arc<CryptoProvider>,
    /// The pin of a mismatching key the server presented, for the error message.
    presented: Mutex<Option<Pin>>,
}

impl PinVerifier {
    pub fn new(pin: Pin) -> PinVerifier {
        PinVerifier {
            pin,
            provider: provider(),
            presented: Mutex::new(None),
        }
    }

    /// The pin this verifier trusts.
    pub fn pin(&self) -> Pin {
        self.pin
    }

    /// The mismatching pin seen in the last failed handshake, if any.
    pub fn mismatch(&self) -> Option<Pin> {
        *self.presented.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let spki = identity::cert_spki(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if self.pin.matches_spki(&spki) {
            return Ok(ServerCertVerified::assertion());
        }
        let presented = Pin::of_spki(&spki);
        *self.presented.lock().unwrap_or_else(|p| p.into_inner()) = Some(presented);
        Err(rustls::Error::General(format!(
            "server key pin mismatch: expected {}, presented {presented}",
            self.pin
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS for enrollment: the server is trusted by its pin only.
pub fn pinned_tls(verifier: Arc<PinVerifier>) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// TLS after enrollment: the server must chain to the Muster CA (and only to
/// it) and match the server name; the agent presents its own certificate.
pub fn mutual_tls(enrolled: &Enrolled) -> Result<ClientConfig, TlsError> {
    let tls = |what: &str, e: &dyn std::fmt::Display| TlsError(format!("{what}: {e}"));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(enrolled.ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| tls("CA certificate", &e))?;
        roots.add(cert).map_err(|e| tls("CA certificate", &e))?;
    }
    if roots.is_empty() {
        return Err(TlsError("no CA certificate in ca.crt".into()));
    }
    let chain = CertificateDer::pem_slice_iter(enrolled.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls("agent certificate", &e))?;
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("protocol versions", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, identity::rustls_key(&enrolled.key))
        .map_err(|e| tls("agent certificate and key", &e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, PublicKeyData};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::sign::{CertifiedKey, SingleCertAndKey};
    use rustls::{ClientConnection, ServerConfig, ServerConnection};

    pub(crate) fn server_cert(key: &KeyPair) -> CertificateDer<'static> {
        CertificateParams::new(vec!["muster.test".into()])
            .unwrap()
            .self_signed(key)
            .unwrap()
            .der()
            .clone()
    }

    /// A TLS server presenting `cert` but signing the handshake with `signer`.
    pub(crate) fn server_config(
        cert: CertificateDer<'static>,
        signer: &KeyPair,
    ) -> Arc<ServerConfig> {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signer.serialize_der()));
        let signing = provider().key_provider.load_private_key(der).unwrap();
        let certified = CertifiedKey::new(vec![cert], signing);
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        Arc::new(config)
    }

    /// Runs a handshake in memory; the first error either side raises.
    fn handshake(
        verifier: Arc<PinVerifier>,
        server: Arc<ServerConfig>,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from("muster.test").unwrap();
        let mut client =
            ClientConnection::new(Arc::new(pinned_tls(verifier).unwrap()), name).unwrap();
        let mut server = ServerConnection::new(server).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                server.read_tls(&mut &buf[..]).unwrap();
                server.process_new_packets()?;
            }
            buf.clear();
            server.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                client.read_tls(&mut &buf[..]).unwrap();
                client.process_new_packets()?;
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn the_pin_verifier_accepts_the_pinned_key_and_names_another() {
        let key = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let cert = server_cert(&key);
        let name = ServerName::try_from("anything").unwrap();
        let good = PinVerifier::new(Pin::of_spki(&key.subject_public_key_info()));
        assert!(good
            .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .is_ok());
        assert_eq!(good.mismatch(), None);

        let expected = Pin::of_spki(&other.subject_public_key_info());
        let bad = PinVerifier::new(expected);
        let err = bad
            .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .unwrap_err()
            .to_string();
        let presented = Pin::of_spki(&key.subject_public_key_info());
        assert!(
            err.contains(&expected.to_string()) && err.contains(&presented.to_string()),
            "{err}"
        );
        assert_eq!(bad.mismatch(), Some(presented));
    }

    #[test]
    fn a_real_handshake_passes_only_with_the_pinned_key_holder() {
        let key = KeyPair::generate().unwrap();
        let cert = server_cert(&key);
        let pin = Pin::of_spki(&key.subject_public_key_info());

        // The genuine server.
        handshake(
            Arc::new(PinVerifier::new(pin)),
            server_config(cert.clone(), &key),
        )
        .unwrap();

        // Another server with its own key: refused on the pin.
        let other = KeyPair::generate().unwrap();
        let verifier = Arc::new(PinVerifier::new(pin));
        assert!(handshake(verifier.clone(), server_config(server_cert(&other), &other)).is_err());
        assert!(verifier.mismatch().is_some());

        // An impostor replaying the genuine certificate without its key:
        // the pin matches, the handshake signature does not.
        let verifier = Arc::new(PinVerifier::new(pin));
        let err = handshake(verifier.clone(), server_config(cert, &other)).unwrap_err();
        assert!(verifier.mismatch().is_none(), "{err}");
    }
}
