//! The `static` backend: a tokens file of hashed bearer tokens, each with the identity, kind and
//! namespace it stands for. Lines: `sha256:<hex of SHA-256 of the token> <kind> <identity>
//! [namespace]`. Only hashes are stored, so the file reveals no token. Tokens are random
//! 256-bit strings (`mycosynth auth token`), so one unsalted SHA-256 is enough: there is no
//! dictionary to try.

use std::collections::HashMap;

use base64::Engine;
use mycosynth_subscriber::wire::IdentityKind;
use sha2::{Digest, Sha256};

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// The identity's name.
    pub identity: String,
    /// Its kind.
    pub kind: IdentityKind,
}

/// The parsed tokens file: token hash -> what it stands for.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], TokenEntry>,
}

const PREFIX: &str = "sha256:";

/// The hash of a token as the tokens file holds it.
///
/// ```
/// let line = mycosynth::callout::tokens::token_hash("s3cr3t");
/// assert!(line.starts_with("sha256:") && line.len() == 7 + 64);
/// ```
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{hex}")
}

/// A fresh random token (256 bits, base64url) with the tokens-file line that accepts it.
pub fn new_token(kind: &IdentityKind, identity: &str) -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = format!(
        "myco_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let namespace = kind
        .namespace()
        .map(|ns| format!(" {ns}"))
        .unwrap_or_default();
    let line = format!(
        "{} {} {identity}{namespace}",
        token_hash(&token),
        kind.name()
    );
    (token, line)
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix(PREFIX)?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// Parses a tokens file (`#` starts a comment).
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut by_hash = HashMap::new();
        let shape = "sha256:<hex> <kind> <identity> [namespace]";
        for record in super::identities::records(text, 1, shape) {
            let (line, [hash, kind, identity], namespace) = record.map_err(|e| e.to_string())?;
            let namespace = namespace.first().copied();
            let error = |message: String| format!("line {line}: {message}");
            let hash = parse_hash(hash)
                .ok_or_else(|| error("the hash is not sha256: and 64 hex digits".into()))?;
            let kind = IdentityKind::parse(kind, namespace).map_err(|e| error(e.to_string()))?;
            let entry = TokenEntry {
                identity: identity.to_owned(),
                kind,
            };
            if by_hash.insert(hash, entry).is_some() {
                return Err(error("this token hash is listed twice".into()));
            }
        }
        Ok(Tokens { by_hash })
    }

    /// What `token` stands for, if it is listed.
    pub fn find(&self, token: &str) -> Option<&TokenEntry> {
        self.by_hash
            .get(&<[u8; 32]>::from(Sha256::digest(token.as_bytes())))
    }

    /// How many tokens are listed.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_found_by_its_line_only() {
        let kind = IdentityKind::parse("service", Some("payment-service")).unwrap();
        let (token, line) = new_token(&kind, "svc-pay");
        let tokens = Tokens::parse(&format!("# tokens\n{line}\n")).unwrap();
        let entry = tokens.find(&token).unwrap();
        assert_eq!((entry.identity.as_str(), &entry.kind), ("svc-pay", &kind));
        assert!(tokens.find("other").is_none());
        assert!(!line.contains(&token));
        let err = Tokens::parse("sha256:12 service a ns").unwrap_err();
        assert!(err.starts_with("line 1: the hash"), "{err}");
    }
}
