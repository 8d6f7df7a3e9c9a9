//! Console sessions, in memory (a restart signs everyone out): a random
//! session id in the cookie, stored only as its SHA-256; each session has
//! its own random CSRF token and ends `SESSION_TTL` after sign-in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};

/// How long a sign-in lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

#[derive(Clone, Debug)]
pub struct Session {
    /// The admin token's name: the actor of everything done in the session.
    pub admin: String,
    pub csrf: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator works");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, id.as_bytes()))
}

/// Constant-time comparison of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_hash.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session for `admin`; the id to put in the cookie.
    pub fn start(&self, admin: &str, now: Instant) -> String {
        let id = random_token();
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            hash(&id),
            Session {
                admin: admin.to_string(),
                csrf: random_token(),
                expires: now + SESSION_TTL,
            },
        );
        id
    }

    /// The live session with this id.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let key = hash(id);
        let mut sessions = self.lock();
        match sessions.get(&key) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session with this id.
    pub fn end(&self, id: &str) {
        self.lock().remove(&hash(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_end() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let id = sessions.start("admin", t0);
        let s = sessions.get(&id, t0).expect("live");
        assert_eq!(s.admin, "admin");
        assert_ne!(s.csrf, id);
        assert!(sessions.get("not-an-id", t0).is_none());
        assert!(sessions.get(&id, t0 + SESSION_TTL).is_none(), "expired");
        let id = sessions.start("admin", t0);
        sessions.end(&id);
        assert!(sessions.get(&id, t0).is_none(), "signed out");
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
