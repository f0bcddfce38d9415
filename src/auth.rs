//! Who may connect: agent and admin tokens, visitor identity, allowed origins.
//!
//! - Agent and admin tokens are configured as SHA-256 hashes. Tokens are long random strings, not
//!   passwords, so a fast hash is enough (as for API tokens elsewhere); the plain token never sits
//!   in the config file.
//! - A visitor proves its id either with a `signature` from the host site (HMAC-SHA256 of the id
//!   with the shared identity secret: a *verified* identity) or with the `token` Parley issued
//!   for an anonymous id (HMAC-SHA256 with a key kept in the data directory, so tokens survive
//!   restarts). Either way a visitor can only ever reach its own conversations.
//! - A socket's `Origin` (visitor and agent alike) must match an allowed origin exactly (after
//!   lower-casing): no suffix or substring matching, so `https://example.com.evil.net` never
//!   passes for `https://example.com`. Parley's own pages (the console, the demo, the dashboard)
//!   always pass: their `Origin` names the host the request was sent to.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::config::{sha256_hex, Config};
use crate::domain::{AgentId, VisitorId};

type HmacSha256 = Hmac<Sha256>;

/// The token of the demo agent and admin, only ever enabled on a loopback address.
pub const DEMO_TOKEN: &str = "demo";

#[derive(Debug, Clone)]
pub struct AgentProfile {
    pub id: AgentId,
    pub name: String,
    pub capacity: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read or create the visitor token key at {path}: {source}")]
    Key {
        path: String,
        source: std::io::Error,
    },
    #[error("agent `{0}` in the configuration is not a valid id")]
    BadAgent(String),
}

/// Everything needed to check credentials; built once at start-up.
pub struct Authenticator {
    /// SHA-256 (hex) of each agent token -> the agent.
    agents_by_hash: HashMap<String, AgentProfile>,
    admin_hashes: HashSet<String>,
    /// Key for tokens of anonymous visitors.
    visitor_key: Vec<u8>,
    /// The host site's secret for signed (verified) visitor ids.
    identity_secret: Option<Vec<u8>>,
    require_verified: bool,
    /// Lower-cased exact origins; empty means any origin.
    allowed_origins: HashSet<String>,
    /// The `demo` agent and admin token are on (pages may say so).
    pub demo: bool,
}

fn hmac_hex(key: &[u8], message: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time check of a hex HMAC.
fn hmac_matches(key: &[u8], message: &str, claimed_hex: &str) -> bool {
    let Ok(claimed) = hex::decode(claimed_hex) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message.as_bytes());
    mac.verify_slice(&claimed).is_ok()
}

impl Authenticator {
    /// # Errors
    /// When the visitor token key cannot be read or created in the data directory, or a
    /// configured agent id is invalid.
    pub fn from_config(config: &Config) -> Result<Self, AuthError> {
        let mut agents_by_hash = HashMap::new();
        for a in &config.agents {
            let id = AgentId::parse(&a.id).map_err(|_| AuthError::BadAgent(a.id.clone()))?;
            agents_by_hash.insert(
                a.token_sha256.to_ascii_lowercase(),
                AgentProfile {
                    id,
                    name: a.name.clone(),
                    capacity: a.capacity.unwrap_or(config.routing.default_capacity),
                },
            );
        }
        let mut admin_hashes: HashSet<String> = config
            .auth
            .admin_token_sha256
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        if config.demo_enabled() {
            tracing::warn!(
                "demo mode: agent `demo` and the admin API accept the token `demo`; configure \
                 [[agents]] and auth.admin_token_sha256 before exposing Parley"
            );
            agents_by_hash.insert(
                sha256_hex(DEMO_TOKEN),
                AgentProfile {
                    id: AgentId::parse("demo").expect("valid id"),
                    name: "Demo Agent".to_string(),
                    capacity: config.routing.default_capacity,
                },
            );
            admin_hashes.insert(sha256_hex(DEMO_TOKEN));
        }
        Ok(Self {
            agents_by_hash,
            admin_hashes,
            visitor_key: load_or_create_key(&config.data_dir.join("visitor-token.key"))?,
            identity_secret: config
                .auth
                .visitor_identity_secret
                .as_ref()
                .map(|s| s.as_bytes().to_vec()),
            require_verified: config.auth.require_verified_visitors,
            allowed_origins: config
                .auth
                .allowed_origins
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            demo: config.demo_enabled(),
        })
    }

    /// The agent a token belongs to.
    pub fn agent(&self, token: &str) -> Option<&AgentProfile> {
        // Looking up by hash does not leak the token through timing: an attacker would have to
        // steer SHA-256 outputs.
        self.agents_by_hash.get(&sha256_hex(token))
    }

    /// Every configured agent, for restoring assignments after a restart.
    pub fn agents(&self) -> impl Iterator<Item = &AgentProfile> {
        self.agents_by_hash.values()
    }

    /// REST access: admins, and agents (who work on transcripts daily).
    pub fn api_access(&self, token: &str) -> bool {
        let hash = sha256_hex(token);
        self.admin_hashes.contains(&hash) || self.agents_by_hash.contains_key(&hash)
    }

    pub fn is_admin(&self, token: &str) -> bool {
        self.admin_hashes.contains(&sha256_hex(token))
    }

    /// The token an anonymous visitor presents on later connections.
    pub fn visitor_token(&self, visitor: &VisitorId) -> String {
        hmac_hex(&self.visitor_key, visitor.as_str())
    }

    /// Checks a visitor's claim to an id. Returns whether the identity is verified by the host
    /// site, or `None` when the claim fails.
    pub fn check_visitor(
        &self,
        visitor: &VisitorId,
        token: Option<&str>,
        signature: Option<&str>,
    ) -> Option<bool> {
        if let (Some(secret), Some(signature)) = (&self.identity_secret, signature) {
            return hmac_matches(secret, visitor.as_str(), signature).then_some(true);
        }
        if self.require_verified {
            return None;
        }
        let token = token?;
        hmac_matches(&self.visitor_key, visitor.as_str(), token).then_some(false)
    }

    /// Whether anonymous visitors (no signature) may connect at all.
    pub fn anonymous_allowed(&self) -> bool {
        !self.require_verified
    }

    /// Exact-match origin check. A request without `Origin` is not from a browser page, so
    /// cross-site abuse does not apply to it; it passes. A page served by Parley itself passes
    /// too, whatever the list says: its `Origin` has the same `host[:port]` as the request's
    /// `Host` (the check browsers' WebSocket servers commonly make, e.g. gorilla/websocket's).
    /// A browser sets both headers itself, so a page on another site cannot pass for ours.
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        match origin {
            _ if self.allowed_origins.is_empty() => true,
            None => true,
            Some(o) if is_same_origin(o, host) => true,
            Some(o) => self.allowed_origins.contains(&o.to_ascii_lowercase()),
        }
    }
}

/// Whether `origin` (`scheme://host[:port]`) names `host`, the request's `Host` header. The
/// scheme is not compared: behind a TLS proxy the page is `https` while Parley sees plain HTTP.
fn is_same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// Reads the visitor token key, creating a random one on first start. Kept in the data
/// directory so visitors keep their ids across restarts.
fn load_or_create_key(path: &Path) -> Result<Vec<u8>, AuthError> {
    let err = |source| AuthError::Key {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => hex::decode(text.trim())
            .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let mut key = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            write_private(path, &hex::encode(&key)).map_err(err)?;
            Ok(key)
        }
        Err(e) => Err(err(e)),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// What a host site computes to vouch for a visitor id: hex HMAC-SHA256(secret, id).
pub fn sign_visitor(secret: &str, visitor: &str) -> String {
    hmac_hex(secret.as_bytes(), visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(origins: &[&str], secret: Option<&str>) -> (Authenticator, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.auth.allowed_origins = origins.iter().map(|s| s.to_string()).collect();
        config.auth.visitor_identity_secret = secret.map(str::to_string);
        (Authenticator::from_config(&config).unwrap(), dir)
    }

    #[test]
    fn origins_match_exactly() {
        let (a, _d) = auth(&["https://example.com"], None);
        let host = Some("chat.example.com");
        assert!(a.origin_allowed(Some("https://example.com"), host));
        assert!(a.origin_allowed(Some("HTTPS://EXAMPLE.COM"), host));
        assert!(!a.origin_allowed(Some("https://example.com.evil.net"), host));
        assert!(!a.origin_allowed(Some("https://evil.example.com"), host));
        assert!(!a.origin_allowed(Some("http://example.com"), host));
        assert!(!a.origin_allowed(Some("https://example.com:8443"), host));
        assert!(a.origin_allowed(None, host));
    }

    #[test]
    fn parleys_own_pages_pass_whatever_the_list() {
        let (a, _d) = auth(&["https://example.com"], None);
        // The console at https://chat.example.com, through a TLS proxy that keeps `Host`.
        assert!(a.origin_allowed(Some("https://chat.example.com"), Some("chat.example.com")));
        assert!(a.origin_allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(a.origin_allowed(Some("https://Chat.Example.com"), Some("chat.example.COM")));
        // Another port or host is another origin; no `Host` proves nothing.
        assert!(!a.origin_allowed(Some("http://127.0.0.1:8081"), Some("127.0.0.1:8080")));
        assert!(!a.origin_allowed(
            Some("https://chat.example.com.evil.net"),
            Some("chat.example.com")
        ));
        assert!(!a.origin_allowed(Some("https://chat.example.com"), None));
        assert!(!a.origin_allowed(Some("https://chat.example.com"), Some("")));
        assert!(!a.origin_allowed(Some("null"), Some("null")));
    }

    #[test]
    fn visitor_tokens_and_signatures() {
        let secret = "0123456789abcdef0123";
        let (a, _d) = auth(&[], Some(secret));
        let v = VisitorId::parse("user-42").unwrap();
        let token = a.visitor_token(&v);
        assert_eq!(a.check_visitor(&v, Some(&token), None), Some(false));
        assert_eq!(a.check_visitor(&v, Some("00"), None), None);
        let other = VisitorId::parse("user-43").unwrap();
        assert_eq!(a.check_visitor(&other, Some(&token), None), None);
        let sig = sign_visitor(secret, "user-42");
        assert_eq!(a.check_visitor(&v, None, Some(&sig)), Some(true));
        assert_eq!(a.check_visitor(&other, None, Some(&sig)), None);
    }

    #[test]
    fn the_visitor_key_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let v = VisitorId::parse("anon-1").unwrap();
        let first = Authenticator::from_config(&config)
            .unwrap()
            .visitor_token(&v);
        let second = Authenticator::from_config(&config)
            .unwrap()
            .visitor_token(&v);
        assert_eq!(first, second);
    }
}
