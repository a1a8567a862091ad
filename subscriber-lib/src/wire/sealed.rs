//! Sensitive values: how they are marked in a schema, the per-namespace data key stored in the
//! [`KEYS_BUCKET`](super::KEYS_BUCKET), and the sealed form in which they are stored in KV,
//! history and change events.
//!
//! A schema marks a key sensitive with `"x-mycosynth-sensitive": true` on its property. The
//! validator validates the clear value, then stores
//! `{"$sealed": "<base64 of nonce || ciphertext>", "key_id": <data key id>}`: XChaCha20-Poly1305
//! with a random 24-byte nonce per value and, as associated data,
//! `mycosynth/v1/<namespace>/<env>/<key>` (a sealed value moved to another key does not open).

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The schema keyword marking a property (config key) sensitive.
pub const SENSITIVE_KEYWORD: &str = "x-mycosynth-sensitive";
/// What the CLI prints instead of a sensitive value.
pub const REDACTED: &str = "<redacted>";
const SEALED_FIELD: &str = "$sealed";
const KEY_ID_FIELD: &str = "key_id";
const NONCE_BYTES: usize = 24;

/// Why a sealed value could not be opened or a data key read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The value was sealed with another data key than the one at hand.
    #[error("sealed with data key {found}, but key {held} is loaded")]
    WrongKey {
        /// The key id the value names.
        found: u32,
        /// The key id at hand.
        held: u32,
    },
    /// The value or the key record is not in the sealed format.
    #[error("not a sealed value or data key: {0}")]
    Malformed(String),
    /// Authentication failed: the ciphertext, its place or the key is not the one it was
    /// sealed with.
    #[error("the sealed value does not open (tampered, moved, or another key)")]
    Tampered,
}

/// The data key of a namespace as stored in [`KEYS_BUCKET`](super::KEYS_BUCKET) under the
/// namespace's name.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataKeyRecord {
    /// Key id (1 for the first key of a namespace), carried by every value it sealed.
    pub id: u32,
    /// The 32-byte key, base64.
    pub key: String,
    /// When it was created (RFC 3339).
    pub created: String,
}

impl std::fmt::Debug for DataKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeyRecord")
            .field("id", &self.id)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// A namespace's data key, ready to seal and open values. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct DataKey {
    id: u32,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id)
    }
}

impl DataKey {
    /// A new random key with this id, and the record to store it as.
    ///
    /// ```
    /// use mycosynth_subscriber::wire::DataKey;
    /// let (key, record) = DataKey::generate(1, "2026-01-01T00:00:00Z");
    /// let sealed = key.seal("ns", "prod", "db.password", &"hunter2".into());
    /// assert!(!sealed.to_string().contains("hunter2"));
    /// let again = DataKey::from_record(&record).unwrap();
    /// assert_eq!(again.open("ns", "prod", "db.password", &sealed).unwrap(), "hunter2");
    /// assert!(again.open("ns", "prod", "other.key", &sealed).is_err());
    /// ```
    pub fn generate(id: u32, created: &str) -> (DataKey, DataKeyRecord) {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let record = DataKeyRecord {
            id,
            key: base64::engine::general_purpose::STANDARD.encode(key),
            created: created.to_owned(),
        };
        (
            DataKey {
                id,
                cipher: XChaCha20Poly1305::new(&key),
            },
            record,
        )
    }

    /// The key a stored record holds.
    ///
    /// ```
    /// # use mycosynth_subscriber::wire::{DataKey, DataKeyRecord};
    /// let bad = DataKeyRecord { id: 1, key: "c2hvcnQ=".into(), created: String::new() };
    /// assert!(DataKey::from_record(&bad).is_err());
    /// ```
    pub fn from_record(record: &DataKeyRecord) -> Result<DataKey, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&record.key)
            .map_err(|e| SealError::Malformed(format!("data key {}: {e}", record.id)))?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| SealError::Malformed(format!("data key {} is not 32 bytes", record.id)))?;
        Ok(DataKey {
            id: record.id,
            cipher,
        })
    }

    /// The key's id.
    ///
    /// ```
    /// # use mycosynth_subscriber::wire::DataKey;
    /// assert_eq!(DataKey::generate(3, "").0.id(), 3);
    /// ```
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Seals the clear `value` of `key` in `namespace`/`environment`.
    ///
    /// ```
    /// # use mycosynth_subscriber::wire::{DataKey, is_sealed};
    /// let (key, _) = DataKey::generate(1, "");
    /// assert!(is_sealed(&key.seal("ns", "prod", "k", &42.into())));
    /// ```
    pub fn seal(&self, namespace: &str, environment: &str, key: &str, value: &Value) -> Value {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let clear = value.to_string();
        let aad = associated_data(namespace, environment, key);
        // Encryption with a valid key only fails for messages beyond 256 GiB.
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: clear.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        serde_json::json!({
            SEALED_FIELD: base64::engine::general_purpose::STANDARD.encode(sealed),
            KEY_ID_FIELD: self.id,
        })
    }

    /// Opens a sealed value of `key` in `namespace`/`environment`.
    ///
    /// ```
    /// # use mycosynth_subscriber::wire::DataKey;
    /// let (key, _) = DataKey::generate(1, "");
    /// let (other, _) = DataKey::generate(1, "");
    /// let sealed = key.seal("ns", "prod", "k", &42.into());
    /// assert_eq!(key.open("ns", "prod", "k", &sealed).unwrap(), 42);
    /// assert!(other.open("ns", "prod", "k", &sealed).is_err());
    /// ```
    pub fn open(
        &self,
        namespace: &str,
        environment: &str,
        key: &str,
        sealed: &Value,
    ) -> Result<Value, SealError> {
        let (key_id, text) = sealed_parts(sealed)
            .ok_or_else(|| SealError::Malformed(format!("value of {key} is not sealed")))?;
        if key_id != self.id {
            return Err(SealError::WrongKey {
                found: key_id,
                held: self.id,
            });
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| SealError::Malformed(format!("value of {key}: {e}")))?;
        if bytes.len() < NONCE_BYTES {
            return Err(SealError::Malformed(format!("value of {key} is too short")));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let aad = associated_data(namespace, environment, key);
        let clear = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SealError::Tampered)?;
        serde_json::from_slice(&clear).map_err(|_| SealError::Tampered)
    }
}

fn associated_data(namespace: &str, environment: &str, key: &str) -> String {
    format!("mycosynth/v1/{namespace}/{environment}/{key}")
}

/// The data key id and ciphertext of a sealed value; None for any other value.
fn sealed_parts(value: &Value) -> Option<(u32, &str)> {
    let object = value.as_object()?;
    if object.len() != 2 {
        return None;
    }
    let text = object.get(SEALED_FIELD)?.as_str()?;
    let id = u32::try_from(object.get(KEY_ID_FIELD)?.as_u64()?).ok()?;
    Some((id, text))
}

/// Whether `value` is in the sealed form.
///
/// ```
/// # use mycosynth_subscriber::wire::is_sealed;
/// assert!(!is_sealed(&serde_json::json!({"a": 1})));
/// assert!(is_sealed(&serde_json::json!({"$sealed": "AAAA", "key_id": 1})));
/// ```
pub fn is_sealed(value: &Value) -> bool {
    sealed_parts(value).is_some()
}

/// The id of the data key a sealed value needs (None: not sealed).
///
/// ```
/// # use mycosynth_subscriber::wire::sealed_key_id;
/// assert_eq!(sealed_key_id(&serde_json::json!({"$sealed": "AAAA", "key_id": 2})), Some(2));
/// ```
pub fn sealed_key_id(value: &Value) -> Option<u32> {
    sealed_parts(value).map(|(id, _)| id)
}

/// The config keys a namespace schema marks sensitive (properties with
/// `"x-mycosynth-sensitive": true`).
///
/// ```
/// # use mycosynth_subscriber::wire::sensitive_keys;
/// let schema = serde_json::json!({"properties": {
///     "db.password": {"type": "string", "x-mycosynth-sensitive": true},
///     "db.pool": {"type": "integer"}}});
/// assert_eq!(sensitive_keys(&schema).into_iter().collect::<Vec<_>>(), vec!["db.password"]);
/// ```
pub fn sensitive_keys(schema: &Value) -> std::collections::BTreeSet<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| {
            properties
                .iter()
                .filter(|(_, p)| p.get(SENSITIVE_KEYWORD) == Some(&Value::Bool(true)))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}
