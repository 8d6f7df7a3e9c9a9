//! Bearer secrets: enrollment, admin and targets-reader tokens. A token reads
//! `<prefix>_<id>_<secret>`; the id finds the row, the secret is kept only as
//! its SHA-256 and compared in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Enroll hosts (`mte_…`).
    Enroll,
    /// Use the admin API (`mta_…`).
    Admin,
    /// Read Prometheus targets and `/metrics`, nothing else (`mtr_…`).
    Reader,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Enroll => "mte_",
            Kind::Admin => "mta_",
            Kind::Reader => "mtr_",
        }
    }
}

/// A secret value whose `Debug` never shows it, so it can't leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(text)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A freshly generated token: its id, the full text to hand out once, and
/// the hash to store.
pub struct NewToken {
    pub id: String,
    pub text: Secret,
    pub hash: Vec<u8>,
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random(buf: &mut [u8]) {
    SystemRandom::new()
        .fill(buf)
        .expect("the operating system's random number generator failed");
}

/// Lowercase hex of `n` random bytes.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    random(&mut buf);
    hex(&buf)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn generate(kind: Kind) -> NewToken {
    let id = random_hex(6);
    let mut secret = [0u8; 32];
    random(&mut secret);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    NewToken {
        text: Secret(format!("{}{id}_{secret}", kind.prefix())),
        hash: hash(&secret),
        id,
    }
}

/// Splits a presented token into id and secret; `None` when it is not of
/// this kind's shape.
pub fn parse(kind: Kind, text: &str) -> Option<(&str, &str)> {
    let rest = text.trim().strip_prefix(kind.prefix())?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && !secret.is_empty() && secret.len() <= 128).then_some((id, secret))
}

pub fn hash(secret: &str) -> Vec<u8> {
    digest(&SHA256, secret.as_bytes()).as_ref().to_vec()
}

/// Whether `secret` hashes to `stored`, compared in constant time.
pub fn verify(secret: &str, stored: &[u8]) -> bool {
    bool::from(hash(secret).as_slice().ct_eq(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_verify() {
        let token = generate(Kind::Enroll);
        let (id, secret) = parse(Kind::Enroll, token.text.expose()).expect("parses");
        assert_eq!(id, token.id);
        assert!(verify(secret, &token.hash));
        assert!(!verify("wrong", &token.hash));
        assert!(parse(Kind::Admin, token.text.expose()).is_none());
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        for bad in [
            "",
            "mte_",
            "mte_xyz_abc",
            "mte_0123456789ab",
            "mte_0123456789ab_",
        ] {
            assert!(parse(Kind::Enroll, bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let token = generate(Kind::Admin);
        assert_eq!(format!("{:?}", token.text), "***");
    }
}
