//! A running console's shared state: its own connection, its key, and the sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;

use crate::client::ApiClient;

/// How long the console waits for the validator, per page.
pub const BUDGET: Duration = Duration::from_secs(5);

/// A running console's shared state.
pub struct Console {
    /// The console's own connection: signing with its key (signed mode), or unsigned (open).
    pub api: ApiClient,
    /// The console's public key, the audience of its session tokens (None: open mode).
    pub public_key: Option<String>,
    /// The signed-in sessions.
    pub sessions: Sessions,
    /// Mark the session cookie `Secure` (the console is served behind TLS).
    pub secure_cookie: bool,
}

impl Console {
    /// A console over `api`; `public_key` is its key in signed mode, None in open mode.
    pub fn new(api: ApiClient, public_key: Option<String>, secure_cookie: bool) -> Console {
        Console {
            api,
            public_key,
            sessions: Sessions::default(),
            secure_cookie,
        }
    }
}

/// One signed-in person (or an anonymous visitor in open mode).
#[derive(Clone)]
pub struct Session {
    /// The person's session token (None: open mode).
    pub token: Option<Arc<str>>,
    /// Who, as shown on pages.
    pub who: String,
    /// This session's CSRF token.
    pub csrf: String,
    /// When it ends, ms since the epoch.
    pub expires_at_ms: i64,
}

/// The sessions of a console, by session id (kept in memory: a restart signs everyone out).
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    /// The live session `id`, dropping expired ones.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires_at_ms > now_ms);
        map.get(id).cloned()
    }

    /// Keeps `session` under a fresh random id, which it returns.
    pub fn insert(&self, session: Session) -> String {
        let id = random_hex();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(id.clone(), session);
        id
    }

    /// Ends session `id`.
    pub fn remove(&self, id: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }
}

/// 32 random bytes in hex: session ids and CSRF tokens.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    data_encoding::HEXLOWER.encode(&bytes)
}
