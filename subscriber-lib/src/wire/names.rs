//! Names: namespaces, environments and config keys, and the rules they obey.
//!
//! Namespaces and environments become single NATS subject tokens, so their character set is
//! narrow. Config keys are dotted (`database.pool_size`); the dots are literal characters in
//! application code and become subject-token separators in the KV key, which is why every
//! segment must be non-empty.

use std::fmt;

/// Longest namespace or environment name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest config key, in bytes (seed 001: keys up to 1 KiB).
pub const MAX_KEY_LEN: usize = 1024;
/// Largest config value, as compact JSON, in bytes (seed 001: values up to 1 MiB).
pub const MAX_VALUE_LEN: usize = 1024 * 1024;
/// Key prefixes reserved for the system; users cannot write keys that start with them.
pub const RESERVED_PREFIXES: [&str; 2] = ["_system", "_meta"];

/// Which rule a name broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} {name:?}: must not be empty")]
    Empty {
        /// What was being named (`namespace`, `environment`, `key`).
        what: &'static str,
        /// The offending name.
        name: String,
    },
    /// The name is longer than allowed.
    #[error("{what} {name:?}: longer than {max} bytes")]
    TooLong {
        /// What was being named.
        what: &'static str,
        /// The offending name (cut to 80 characters).
        name: String,
        /// The limit in bytes.
        max: usize,
    },
    /// The name has a character outside its set.
    #[error("{what} {name:?}: {rule}")]
    BadCharacter {
        /// What was being named.
        what: &'static str,
        /// The offending name.
        name: String,
        /// The rule, in words.
        rule: &'static str,
    },
    /// The key starts with a reserved prefix.
    #[error("key {name:?}: the prefix {prefix:?} is reserved for the system")]
    Reserved {
        /// The offending key.
        name: String,
        /// The reserved prefix it starts with.
        prefix: &'static str,
    },
}

impl NameError {
    /// The short rule name used in error replies and metrics labels.
    pub fn rule(&self) -> &'static str {
        match self {
            NameError::Empty { .. } => "empty",
            NameError::TooLong { .. } => "max_length",
            NameError::BadCharacter { .. } => "charset",
            NameError::Reserved { .. } => "reserved_prefix",
        }
    }
}

const NAME_RULE: &str = "use lowercase letters, digits and '-', starting with a letter or digit";
const KEY_RULE: &str =
    "use dot-separated segments of letters, digits, '_' and '-', with no empty segment";

fn shorten(name: &str) -> String {
    name.chars().take(80).collect()
}

fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty {
            what,
            name: name.into(),
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            name: shorten(name),
            max: MAX_NAME_LEN,
        });
    }
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(NameError::BadCharacter {
            what,
            name: shorten(name),
            rule: NAME_RULE,
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            /// Checks `name` against the rules and wraps it.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check_name($what, &name)?;
                Ok(Self(name))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// A namespace: the service whose config this is, e.g. `payment-service`.
    ///
    /// ```
    /// use mycosynth_subscriber::wire::Namespace;
    /// assert!(Namespace::new("payment-service").is_ok());
    /// assert!(Namespace::new("Payment.Service").is_err());
    /// ```
    Namespace,
    "namespace"
);

name_type!(
    /// An environment, e.g. `production` or `staging`.
    ///
    /// ```
    /// use mycosynth_subscriber::wire::Environment;
    /// assert_eq!(Environment::new("staging").unwrap().as_str(), "staging");
    /// ```
    Environment,
    "environment"
);

/// A config key such as `database.pool_size`: dot-separated segments, at most 1 KiB.
///
/// ```
/// use mycosynth_subscriber::wire::ConfigKey;
/// assert!(ConfigKey::new("database.pool_size").is_ok());
/// assert!(ConfigKey::new("_meta.version").is_err());
/// assert!(ConfigKey::new("a..b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigKey(String);

impl ConfigKey {
    /// Checks `key` against the rules and wraps it.
    pub fn new(key: impl Into<String>) -> Result<Self, NameError> {
        let key = key.into();
        if key.is_empty() {
            return Err(NameError::Empty {
                what: "key",
                name: key,
            });
        }
        if key.len() > MAX_KEY_LEN {
            return Err(NameError::TooLong {
                what: "key",
                name: shorten(&key),
                max: MAX_KEY_LEN,
            });
        }
        let segments_ok = key.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !segments_ok {
            return Err(NameError::BadCharacter {
                what: "key",
                name: shorten(&key),
                rule: KEY_RULE,
            });
        }
        if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| key.starts_with(*p)) {
            return Err(NameError::Reserved { name: key, prefix });
        }
        Ok(Self(key))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a client's idempotency key: 1 to 64 letters, digits, `-` or `_` (it becomes a KV key
/// token).
///
/// ```
/// use mycosynth_subscriber::wire::check_request_id;
/// assert!(check_request_id("01a2f3-retry_1").is_ok());
/// assert!(check_request_id("a.b").is_err());
/// ```
pub fn check_request_id(id: &str) -> Result<(), NameError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(NameError::BadCharacter {
            what: "request id",
            name: shorten(id),
            rule: "use 1 to 64 letters, digits, '-' or '_'",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_charset() {
        assert!(Namespace::new("payment-service").is_ok());
        assert!(Namespace::new("9lives").is_ok());
        for bad in [
            "",
            "-lead",
            "Upper",
            "has.dot",
            "has space",
            "star*",
            "gt>",
            "_system",
        ] {
            assert!(Namespace::new(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            Namespace::new("a".repeat(65)).unwrap_err().rule(),
            "max_length"
        );
    }

    #[test]
    fn keys_follow_the_rules() {
        assert!(ConfigKey::new("database.pool_size").is_ok());
        assert!(ConfigKey::new("Feature-Flags.new_checkout").is_ok());
        assert_eq!(ConfigKey::new("a..b").unwrap_err().rule(), "charset");
        assert_eq!(ConfigKey::new(".a").unwrap_err().rule(), "charset");
        assert_eq!(ConfigKey::new("a.").unwrap_err().rule(), "charset");
        assert_eq!(ConfigKey::new("a*b").unwrap_err().rule(), "charset");
        assert_eq!(
            ConfigKey::new("_meta").unwrap_err().rule(),
            "reserved_prefix"
        );
        assert_eq!(
            ConfigKey::new("_system.x").unwrap_err().rule(),
            "reserved_prefix"
        );
        assert_eq!(
            ConfigKey::new("k".repeat(1025)).unwrap_err().rule(),
            "max_length"
        );
        assert!(ConfigKey::new("k".repeat(1024)).is_ok());
    }
}
