//! The server public-key pin, in the form curl's `--pinnedpubkey` takes:
//! `sha256//` followed by the standard base64 of the SHA-256 of the DER
//! SubjectPublicKeyInfo.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "sha256//";

/// A parsed pin: the SHA-256 of a SubjectPublicKeyInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PinError {
    #[error(
        "a pin starts with \"sha256//\" followed by base64 (the form curl --pinnedpubkey takes)"
    )]
    Prefix,
    #[error("the pin is not valid base64 of a 32-byte SHA-256 digest")]
    Digest,
}

impl Pin {
    /// The pin of a DER-encoded SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Pin {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, spki_der).as_ref());
        Pin(out)
    }

    pub fn parse(text: &str) -> Result<Pin, PinError> {
        let b64 = text.trim().strip_prefix(PREFIX).ok_or(PinError::Prefix)?;
        let bytes = STANDARD.decode(b64).map_err(|_| PinError::Digest)?;
        let digest: [u8; 32] = bytes.try_into().map_err(|_| PinError::Digest)?;
        Ok(Pin(digest))
    }

    /// Whether a presented SubjectPublicKeyInfo matches, compared in constant time.
    pub fn matches_spki(&self, spki_der: &[u8]) -> bool {
        let other = Pin::of_spki(spki_der);
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}", STANDARD.encode(self.0))
    }
}

impl std::str::FromStr for Pin {
    type Err = PinError;
    fn from_str(s: &str) -> Result<Pin, PinError> {
        Pin::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_text_form() {
        let pin = Pin::of_spki(b"some spki bytes");
        let text = pin.to_string();
        assert!(text.starts_with("sha256//"));
        assert_eq!(text.len(), "sha256//".len() + 44);
        assert_eq!(Pin::parse(&text), Ok(pin));
        assert!(pin.matches_spki(b"some spki bytes"));
        assert!(!pin.matches_spki(b"other spki bytes"));
    }

    #[test]
    fn refuses_malformed_pins() {
        assert_eq!(Pin::parse("abc"), Err(PinError::Prefix));
        assert_eq!(Pin::parse("sha256//not base64!"), Err(PinError::Digest));
        assert_eq!(Pin::parse("sha256//AAAA"), Err(PinError::Digest));
    }
}
