//! The poll index: what an agent request's authentication and the 304
//! decision need, in memory. Certificate fingerprint → (host, expiry, the
//! certificate it renewed), host → (rendered config hash, its
//! certificates), for the unrevoked certificates of active hosts.
//!
//! The store stays the truth. Every fleet function that changes a
//! certificate, a host's activity or its rendered hash updates the index
//! in the same critical section as its commit ([`crate::store::Store::write_then`]),
//! so the index changes in commit order and before the function returns:
//! once a decommission or a replacement returned, no poll with a revoked
//! certificate passes. A certificate the index does not know (revoked,
//! never issued, or a renewal whose predecessor is still live) is looked
//! up in the store by [`super::Fleet::authenticate`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::AgentCert;
use crate::store::{LiveCert, Store, StoreError};

/// A SHA-256 fingerprint, as bytes.
type Fp = [u8; 32];

/// The bytes of a lowercase or uppercase hex SHA-256.
fn fp(hex: &str) -> Option<Fp> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

struct Cert {
    host: Arc<str>,
    not_after: i64,
    /// The certificate this one renewed: while that one is live, the first
    /// use of this one goes to the store, which revokes it.
    replaces: Option<Fp>,
}

struct Host {
    rendered_hash: Box<str>,
    certs: Vec<Fp>,
}

#[derive(Default)]
struct Maps {
    certs: HashMap<Fp, Cert>,
    hosts: HashMap<Arc<str>, Host>,
}

impl Maps {
    fn remove_cert(&mut self, fp: &Fp) {
        if let Some(cert) = self.certs.remove(fp) {
            if let Some(host) = self.hosts.get_mut(&cert.host) {
                host.certs.retain(|c| c != fp);
            }
        }
    }
}

/// What the index says about a presented certificate.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Live, of an active host: the request passes.
    Pass(AgentCert),
    /// Live but past its expiry.
    Expired,
    /// Not a live certificate the index can decide on: ask the store.
    Ask,
}

/// See the module documentation.
#[derive(Default)]
pub struct PollIndex {
    maps: RwLock<Maps>,
}

impl PollIndex {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills an empty index from the store, row by row; how many
    /// certificates.
    pub fn load(&self, store: &Store) -> Result<usize, StoreError> {
        let mut maps = self.write();
        *maps = Maps::default();
        store.for_each_live_cert(|c| insert(&mut maps, &c))?;
        Ok(maps.certs.len())
    }

    /// The presented certificate (hex fingerprint) at `now`.
    pub fn get(&self, fingerprint: &str, now: i64) -> Lookup {
        let Some(key) = fp(fingerprint) else {
            return Lookup::Ask;
        };
        let maps = self.read();
        let Some(cert) = maps.certs.get(&key) else {
            return Lookup::Ask;
        };
        if cert.not_after < now {
            return Lookup::Expired;
        }
        if cert
            .replaces
            .is_some_and(|old| maps.certs.contains_key(&old))
        {
            return Lookup::Ask;
        }
        let Some(host) = maps.hosts.get(&cert.host) else {
            return Lookup::Ask;
        };
        Lookup::Pass(AgentCert {
            host_id: cert.host.to_string(),
            fingerprint: fingerprint.to_ascii_lowercase(),
            not_after: cert.not_after,
            rendered_hash: host.rendered_hash.to_string(),
        })
    }

    /// A live certificate of an active host, and the host's current hash.
    pub fn upsert(&self, cert: &LiveCert) {
        insert(&mut self.write(), cert);
    }

    /// Forgets a certificate (revoked).
    pub fn revoke_cert(&self, fingerprint: &str) {
        if let Some(key) = fp(fingerprint) {
            self.write().remove_cert(&key);
        }
    }

    /// Forgets every certificate of a host (all revoked), and the host.
    pub fn revoke_host(&self, host_id: &str) {
        let mut maps = self.write();
        if let Some(host) = maps.hosts.remove(host_id) {
            for c in &host.certs {
                maps.certs.remove(c);
            }
        }
    }

    /// Forgets the certificates that renewed `fingerprint` (revoked by a
    /// later renewal of the same certificate).
    pub fn revoke_renewals_of(&self, host_id: &str, fingerprint: &str) {
        let Some(old) = fp(fingerprint) else {
            return;
        };
        let mut maps = self.write();
        let renewals: Vec<Fp> = match maps.hosts.get(host_id) {
            Some(host) => host
                .certs
                .iter()
                .filter(|c| maps.certs.get(*c).is_some_and(|c| c.replaces == Some(old)))
                .copied()
                .collect(),
            None => return,
        };
        for c in &renewals {
            maps.remove_cert(c);
        }
    }

    /// A host's new rendered config hash (nothing when the index has no
    /// live certificate of it).
    pub fn set_hash(&self, host_id: &str, rendered_hash: &str) {
        if let Some(host) = self.write().hosts.get_mut(host_id) {
            host.rendered_hash = rendered_hash.into();
        }
    }

    /// Live certificates indexed.
    pub fn len(&self) -> usize {
        self.read().certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn insert(maps: &mut Maps, c: &LiveCert) {
    let Some(key) = fp(&c.fingerprint) else {
        tracing::error!(fingerprint = %c.fingerprint, "malformed certificate fingerprint in the store; left to the store");
        return;
    };
    let host_key: Arc<str> = match maps.hosts.get_key_value(c.host_id.as_str()) {
        Some((k, _)) => k.clone(),
        None => Arc::from(c.host_id.as_str()),
    };
    let host = maps.hosts.entry(host_key.clone()).or_insert_with(|| Host {
        rendered_hash: Box::from(""),
        certs: Vec::new(),
    });
    host.rendered_hash = c.rendered_hash.as_str().into();
    if !host.certs.contains(&key) {
        host.certs.push(key);
    }
    maps.certs.insert(
        key,
        Cert {
            host: host_key,
            not_after: c.not_after,
            replaces: c.replaces.as_deref().and_then(fp),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(fp: char, host: &str, replaces: Option<char>) -> LiveCert {
        LiveCert {
            fingerprint: fp.to_string().repeat(64),
            host_id: host.into(),
            not_after: 100,
            replaces: replaces.map(|c| c.to_string().repeat(64)),
            rendered_hash: format!("hash-{host}"),
        }
    }

    fn passes(index: &PollIndex, fp: char, now: i64) -> Option<String> {
        match index.get(&fp.to_string().repeat(64), now) {
            Lookup::Pass(c) => Some(c.host_id),
            _ => None,
        }
    }

    #[test]
    fn a_renewal_passes_once_its_predecessor_is_gone_and_a_host_revokes_all() {
        let index = PollIndex::default();
        index.upsert(&live('a', "web-1", None));
        index.upsert(&live('b', "web-1", Some('a')));
        assert_eq!(passes(&index, 'a', 50), Some("web-1".into()));
        // The renewal's first use is the store's business (it revokes 'a').
        assert_eq!(index.get(&"b".repeat(64), 50), Lookup::Ask);
        index.revoke_cert(&"a".repeat(64));
        assert_eq!(passes(&index, 'b', 50), Some("web-1".into()));
        assert_eq!(index.get(&"b".repeat(64), 101), Lookup::Expired);
        index.set_hash("web-1", "new");
        match index.get(&"b".repeat(64), 50) {
            Lookup::Pass(c) => assert_eq!(c.rendered_hash, "new"),
            other => panic!("{other:?}"),
        }
        index.upsert(&live('c', "web-2", None));
        index.revoke_host("web-1");
        assert_eq!(index.get(&"b".repeat(64), 50), Lookup::Ask);
        assert_eq!(passes(&index, 'c', 50), Some("web-2".into()));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_second_renewal_drops_the_unused_first() {
        let index = PollIndex::default();
        index.upsert(&live('a', "web-1", None));
        index.upsert(&live('b', "web-1", Some('a')));
        index.revoke_renewals_of("web-1", &"a".repeat(64));
        index.upsert(&live('c', "web-1", Some('a')));
        assert_eq!(index.len(), 2);
        assert_eq!(index.get(&"b".repeat(64), 50), Lookup::Ask);
        assert_eq!(passes(&index, 'a', 50), Some("web-1".into()));
        assert_eq!(index.get(&"zz".repeat(32), 50), Lookup::Ask);
    }
}
