//! Backup and restore of a whole cluster's Mycosynth state: every namespace's values, heads,
//! history, idempotency records and parent declarations (`mycosynth-config`), the schemas, the
//! access policy, the data keys (encrypted with a key the operator gives) and the audit log.
//!
//! The archive ([`archive`]) holds the stored bytes of every record as the validator wrote
//! them, so a restore writes back exactly those bytes: nothing is re-encoded. The one record
//! set a backup makes itself is the materialisation of a head that was committed but not yet
//! materialised when the backup read it; it is built by the validator's own
//! [`crate::store::materialised_records`], byte for byte what the validator would have written.
//!
//! [`collect`] reads the state while writes continue, at one consistent cut of the config
//! stream ([`Manifest::config_seq`]); [`restore`] writes it into an empty cluster.

pub mod archive;
pub mod collect;
pub mod restore;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use archive::{name_field, take_name, ArchiveError, Frame, Kind};

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// NATS did not answer or refused a read or write.
    #[error("{0}")]
    Unavailable(String),
    /// The archive is damaged, truncated or not an archive.
    #[error("{path}: {error}")]
    Archive {
        /// The archive file.
        path: String,
        /// What is wrong with it.
        error: ArchiveError,
    },
    /// The operator's backup key is missing, malformed or not the one the archive was made with.
    #[error("{0}")]
    Key(String),
    /// The cluster already holds Mycosynth state (restore without `--force`), or a validator
    /// is running.
    #[error("{0}")]
    NotEmpty(String),
    /// The archive or key file cannot be read or written.
    #[error("{0}")]
    File(String),
}

/// The first frame of an archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Unique id of this archive (the associated data of its sealed data keys).
    pub archive_id: String,
    /// When the backup was taken, RFC 3339 UTC.
    pub created: String,
    /// The same, µs since the epoch.
    pub created_us: i64,
    /// The last stream sequence of `mycosynth-config` the backup read: the cut every
    /// namespace/environment is taken at.
    pub config_seq: u64,
    /// Every namespace/environment (`<ns>.<env>`) and the version it holds in the archive.
    pub versions: BTreeMap<String, u64>,
    /// The last audit record (stream sequence) in the archive.
    pub audit_last_seq: u64,
    /// The data keys are in the archive, encrypted with the operator's key.
    pub data_keys: bool,
}

/// The last frame: how many of each the archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// KV records (config, schemas, policy).
    pub kv: u64,
    /// Data keys.
    pub data_keys: u64,
    /// Audit records.
    pub audit: u64,
}

/// One KV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The bucket.
    pub bucket: String,
    /// The KV key.
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
}

/// One audit record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its stream sequence.
    pub seq: u64,
    /// Its subject (`mycosynth.audit.<action>`).
    pub subject: String,
    /// Its `Nats-Msg-Id` (the record's hash), when it had one.
    pub msg_id: String,
    /// The stored JSON.
    pub payload: Vec<u8>,
}

/// What an archive holds, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Contents {
    /// The manifest.
    pub manifest: Manifest,
    /// Config, schema and policy records.
    pub kv: Vec<KvEntry>,
    /// The data keys, in clear (a backup being written, or an archive opened with its key).
    pub data_keys: Vec<KvEntry>,
    /// The audit log, in sequence order.
    pub audit: Vec<AuditEntry>,
}

/// The operator's key the data keys are encrypted with in an archive: 32 bytes, base64 in a
/// file (`head -c 32 /dev/urandom | base64 > backup.key`).
#[derive(Clone)]
pub struct BackupKey([u8; 32]);

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupKey(..)")
    }
}

impl BackupKey {
    /// Reads a key file.
    pub fn from_file(path: &Path) -> Result<BackupKey, BackupError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BackupError::File(format!("backup key {}: {e}", path.display())))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                BackupError::Key(format!(
                    "backup key {} broke rule \"32 bytes in base64\" (make one with: head -c 32 /dev/urandom | base64)",
                    path.display()
                ))
            })?;
        Ok(BackupKey(bytes))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }
}

#[derive(Serialize, Deserialize)]
struct SealedEntry {
    key: String,
    value: String,
}

/// Encrypts the data keys for an archive (XChaCha20-Poly1305, the archive id as associated data).
fn seal_keys(key: &BackupKey, archive_id: &str, entries: &[KvEntry]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let clear: Vec<SealedEntry> = entries
        .iter()
        .map(|e| SealedEntry {
            key: e.key.clone(),
            value: b64.encode(&e.value),
        })
        .collect();
    let plaintext = serde_json::to_vec(&clear).unwrap_or_default();
    let nonce_bytes: [u8; 24] = rand::random();
    let nonce = XNonce::from(nonce_bytes);
    let sealed = key
        .cipher()
        .encrypt(
            &nonce,
            Payload {
                msg: &plaintext,
                aad: archive_id.as_bytes(),
            },
        )
        .unwrap_or_default();
    [nonce_bytes.as_slice(), &sealed].concat()
}

fn open_keys(
    key: &BackupKey,
    archive_id: &str,
    sealed: &[u8],
) -> Result<Vec<KvEntry>, BackupError> {
    let wrong = || {
        BackupError::Key(
            "the backup key does not open this archive's data keys (not the key it was made with)"
                .into(),
        )
    };
    if sealed.len() < 24 {
        return Err(wrong());
    }
    let (nonce, ciphertext) = sealed.split_at(24);
    let plaintext = key
        .cipher()
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: archive_id.as_bytes(),
            },
        )
        .map_err(|_| wrong())?;
    let entries: Vec<SealedEntry> = serde_json::from_slice(&plaintext).map_err(|_| wrong())?;
    let b64 = base64::engine::general_purpose::STANDARD;
    entries
        .into_iter()
        .map(|e| {
            Ok(KvEntry {
                bucket: mycosynth_subscriber::wire::KEYS_BUCKET.to_owned(),
                value: b64.decode(&e.value).map_err(|_| wrong())?,
                key: e.key,
            })
        })
        .collect()
}

/// Progress on a terminal (hidden when stderr is not one, or for `--json`).
pub fn progress(total: u64, what: &str, quiet: bool) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>9} [{bar:40}] {pos}/{len} records ({elapsed}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Writes `contents` as an archive to `path` (through a temporary file, renamed when
/// complete, so a failed backup leaves no half archive). Returns (bytes, SHA-256).
pub fn write_file(
    path: &Path,
    contents: &Contents,
    key: Option<&BackupKey>,
) -> Result<(u64, String), BackupError> {
    let file_err = |e: std::io::Error| BackupError::File(format!("{}: {e}", path.display()));
    if !contents.data_keys.is_empty() && key.is_none() {
        return Err(BackupError::Key(format!(
            "the cluster holds {} data keys of sensitive values: give --key-file to encrypt them in the archive",
            contents.data_keys.len()
        )));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let tmp =
        tempfile::NamedTempFile::new_in(dir.unwrap_or_else(|| Path::new("."))).map_err(file_err)?;
    let mut writer =
        archive::Writer::new(std::io::BufWriter::new(tmp.as_file())).map_err(file_err)?;
    let manifest = serde_json::to_vec(&contents.manifest).unwrap_or_default();
    writer
        .frame(Kind::Manifest, &[&manifest])
        .map_err(file_err)?;
    for entry in &contents.kv {
        writer
            .frame(
                Kind::Kv,
                &[
                    &name_field(&entry.bucket),
                    &name_field(&entry.key),
                    &entry.value,
                ],
            )
            .map_err(file_err)?;
    }
    if let (Some(key), false) = (key, contents.data_keys.is_empty()) {
        let sealed = seal_keys(key, &contents.manifest.archive_id, &contents.data_keys);
        writer
            .frame(Kind::SealedKeys, &[&sealed])
            .map_err(file_err)?;
    }
    for record in &contents.audit {
        writer
            .frame(
                Kind::Audit,
                &[
                    &record.seq.to_le_bytes(),
                    &name_field(&record.subject),
                    &name_field(&record.msg_id),
                    &record.payload,
                ],
            )
            .map_err(file_err)?;
    }
    let counts = Counts {
        kv: contents.kv.len() as u64,
        data_keys: contents.data_keys.len() as u64,
        audit: contents.audit.len() as u64,
    };
    let counts = serde_json::to_vec(&counts).unwrap_or_default();
    writer.frame(Kind::End, &[&counts]).map_err(file_err)?;
    let written = writer.written + 32;
    let (_, digest) = writer.finish().map_err(file_err)?;
    tmp.as_file().sync_all().map_err(file_err)?;
    tmp.persist(path).map_err(|e| file_err(e.error))?;
    Ok((written, digest))
}

/// Reads and checks a whole archive file, and opens its data keys with `key`. Nothing is
/// written anywhere: a damaged, truncated or foreign file, or a wrong key, fails here.
pub fn read_file(path: &Path, key: Option<&BackupKey>) -> Result<Contents, BackupError> {
    let bytes =
        std::fs::read(path).map_err(|e| BackupError::File(format!("{}: {e}", path.display())))?;
    decode(&bytes, key).map_err(|err| match err {
        Decoded::Archive(error) => BackupError::Archive {
            path: path.display().to_string(),
            error,
        },
        Decoded::Other(err) => err,
    })
}

enum Decoded {
    Archive(ArchiveError),
    Other(BackupError),
}

fn content_error(frame: &Frame<'_>, message: impl Into<String>) -> Decoded {
    Decoded::Archive(ArchiveError::Content {
        frame: frame.index,
        kind: frame.kind.name().into(),
        message: message.into(),
    })
}

fn audit_entry(frame: &Frame<'_>) -> Result<AuditEntry, Decoded> {
    let seq = frame
        .payload
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| content_error(frame, "no sequence"))?;
    let (subject, rest) =
        take_name(&frame.payload[8..]).ok_or_else(|| content_error(frame, "no subject"))?;
    let (msg_id, payload) = take_name(rest).ok_or_else(|| content_error(frame, "no message id"))?;
    Ok(AuditEntry {
        seq,
        subject: subject.to_owned(),
        msg_id: msg_id.to_owned(),
        payload: payload.to_vec(),
    })
}

fn decode(bytes: &[u8], key: Option<&BackupKey>) -> Result<Contents, Decoded> {
    let frames = archive::read(bytes).map_err(Decoded::Archive)?;
    let (first, last) = match (frames.first(), frames.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => return Err(Decoded::Archive(ArchiveError::NotAnArchive)),
    };
    let manifest: Manifest = serde_json::from_slice(first.payload)
        .map_err(|e| content_error(first, format!("unreadable manifest: {e}")))?;
    let counts: Counts = serde_json::from_slice(last.payload)
        .map_err(|e| content_error(last, format!("unreadable counts: {e}")))?;
    let mut contents = Contents {
        manifest,
        kv: Vec::new(),
        data_keys: Vec::new(),
        audit: Vec::new(),
    };
    let mut sealed = None;
    for frame in &frames[1..frames.len() - 1] {
        match frame.kind {
            Kind::Kv => {
                let (bucket, rest) =
                    take_name(frame.payload).ok_or_else(|| content_error(frame, "no bucket"))?;
                let (key, value) = take_name(rest).ok_or_else(|| content_error(frame, "no key"))?;
                contents.kv.push(KvEntry {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    value: value.to_vec(),
                });
            }
            Kind::SealedKeys => sealed = Some(frame.payload),
            Kind::Audit => {
                let record = audit_entry(frame)?;
                if record.seq != contents.audit.len() as u64 + 1 {
                    return Err(content_error(
                        frame,
                        format!("audit record {} out of order", record.seq),
                    ));
                }
                contents.audit.push(record);
            }
            Kind::Manifest | Kind::End => {
                return Err(content_error(
                    frame,
                    "a manifest or end frame in the middle",
                ))
            }
        }
    }
    let found = (contents.kv.len() as u64, contents.audit.len() as u64);
    if found != (counts.kv, counts.audit) || sealed.is_some() != (counts.data_keys > 0) {
        return Err(content_error(
            last,
            format!("the archive says {counts:?} but holds {found:?} KV and audit records"),
        ));
    }
    if let Some(sealed) = sealed {
        let key = key.ok_or_else(|| {
            Decoded::Other(BackupError::Key(format!(
                "the archive holds {} encrypted data keys: give the --key-file it was made with",
                counts.data_keys
            )))
        })?;
        contents.data_keys =
            open_keys(key, &contents.manifest.archive_id, sealed).map_err(Decoded::Other)?;
    }
    Ok(contents)
}
