//! The last-known-good cache: one file per namespace/environment holding the last applied
//! snapshot, so a service can start and run while NATS is unreachable.
//!
//! File layout (text, so a person can look at it):
//! ```text
//! mycosynth-lkg 1                  <- magic and format version
//! 3f2a9c1e                         <- CRC-32 of the body, hex
//! {"namespace":..,"environment":..,"version":..,"values":{..},"defaults":{..}}
//! ```
//! Writes are atomic: a temporary file in the same directory, fsync, rename, fsync of the
//! directory. Reads never trust the disk: a wrong magic, another format version, a checksum
//! mismatch, unparseable JSON or another namespace/environment is refused as a whole.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::snapshot::{FastMap, Snapshot};
use crate::wire::{Environment, Namespace};

/// The cache format this build writes and reads.
pub const CACHE_FORMAT: u32 = 1;
const MAGIC: &str = "mycosynth-lkg";
/// Largest cache file read; anything larger is refused rather than read into memory.
const MAX_CACHE_BYTES: u64 = 1 << 30;

/// Why a cache file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// There is no cache file.
    #[error("no cache file at {0}")]
    Missing(PathBuf),
    /// The file could not be read.
    #[error("cannot read cache file {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        message: String,
    },
    /// Written by another format version of this library.
    #[error("cache file {path} has format {found}, this build reads format {CACHE_FORMAT}")]
    ForeignFormat {
        /// The file.
        path: PathBuf,
        /// The format found.
        found: String,
    },
    /// Truncated, corrupted, or not a cache file at all.
    #[error("cache file {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A valid cache of another namespace/environment.
    #[error("cache file {path} holds {found}, not {expected}")]
    WrongNamespace {
        /// The file.
        path: PathBuf,
        /// What it holds.
        found: String,
        /// What was asked for.
        expected: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Body {
    namespace: String,
    environment: String,
    version: u64,
    committed_at_us: i64,
    values: BTreeMap<String, Value>,
    defaults: BTreeMap<String, Value>,
}

/// The cache file of `ns`/`env` in `dir`.
pub fn cache_path(dir: &Path, ns: &Namespace, env: &Environment) -> PathBuf {
    dir.join(format!("{ns}.{env}.lkg"))
}

/// Encodes a snapshot as cache file bytes.
pub(crate) fn encode(ns: &Namespace, env: &Environment, snapshot: &Snapshot) -> Vec<u8> {
    let body = Body {
        namespace: ns.to_string(),
        environment: env.to_string(),
        version: snapshot.version(),
        committed_at_us: snapshot.committed_at_us(),
        values: snapshot
            .values()
            .iter()
            .map(|(k, v)| (k.to_string(), (**v).clone()))
            .collect(),
        defaults: snapshot
            .defaults()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut out = format!("{MAGIC} {CACHE_FORMAT}\n{:08x}\n", crc32fast::hash(&json)).into_bytes();
    out.extend_from_slice(&json);
    out
}

/// Decodes and checks cache file bytes. Never panics.
pub(crate) fn decode(
    path: &Path,
    bytes: &[u8],
    ns: &Namespace,
    env: &Environment,
) -> Result<Snapshot, CacheError> {
    let damaged = |reason: &str| CacheError::Damaged {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let mut parts = bytes.splitn(3, |b| *b == b'\n');
    let header = parts
        .next()
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| damaged("no header"))?;
    let (magic, format) = header.split_once(' ').ok_or_else(|| damaged("no header"))?;
    if magic != MAGIC {
        return Err(damaged("not a Mycosynth cache file"));
    }
    if format != CACHE_FORMAT.to_string() {
        return Err(CacheError::ForeignFormat {
            path: path.to_owned(),
            found: format.chars().take(20).collect(),
        });
    }
    let checksum = parts
        .next()
        .and_then(|c| std::str::from_utf8(c).ok())
        .ok_or_else(|| damaged("no checksum"))?;
    let checksum = u32::from_str_radix(checksum, 16).map_err(|_| damaged("unreadable checksum"))?;
    let body = parts.next().ok_or_else(|| damaged("no body"))?;
    if crc32fast::hash(body) != checksum {
        return Err(damaged("checksum mismatch (truncated or corrupted)"));
    }
    let body: Body = serde_json::from_slice(body).map_err(|e| damaged(&format!("body: {e}")))?;
    if body.namespace != ns.as_str() || body.environment != env.as_str() {
        return Err(CacheError::WrongNamespace {
            path: path.to_owned(),
            found: format!("{}/{}", body.namespace, body.environment),
            expected: format!("{ns}/{env}"),
        });
    }
    let values: FastMap<Arc<Value>> = body
        .values
        .into_iter()
        .map(|(k, v)| (Arc::from(k), Arc::new(v)))
        .collect();
    let defaults: FastMap<Value> = body
        .defaults
        .into_iter()
        .map(|(k, v)| (Arc::from(k), v))
        .collect();
    Ok(Snapshot::new(
        body.version,
        values,
        Arc::new(defaults),
        body.committed_at_us,
    ))
}

/// Reads the cache of `ns`/`env` from `dir`.
///
/// ```
/// use mycosynth_subscriber::cache::{read, CacheError};
/// use mycosynth_subscriber::wire::{Environment, Namespace};
/// let dir = std::env::temp_dir().join("mycosynth-doc-no-cache");
/// let err = read(&dir, &Namespace::new("a").unwrap(), &Environment::new("b").unwrap()).unwrap_err();
/// assert!(matches!(err, CacheError::Missing(_)));
/// ```
pub fn read(dir: &Path, ns: &Namespace, env: &Environment) -> Result<Snapshot, CacheError> {
    let path = cache_path(dir, ns, env);
    let io = |e: std::io::Error| CacheError::Io {
        path: path.clone(),
        message: e.to_string(),
    };
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CacheError::Missing(path))
        }
        Err(e) => return Err(io(e)),
    };
    if meta.len() > MAX_CACHE_BYTES {
        return Err(CacheError::Damaged {
            path,
            reason: format!("{} bytes is larger than any cache", meta.len()),
        });
    }
    let bytes = std::fs::read(&path).map_err(io)?;
    decode(&path, &bytes, ns, env)
}

/// Writes the cache of `ns`/`env` into `dir` atomically (temp file, fsync, rename).
pub(crate) fn write(
    dir: &Path,
    ns: &Namespace,
    env: &Environment,
    snapshot: &Snapshot,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = cache_path(dir, ns, env);
    let tmp = dir.join(format!(".{ns}.{env}.lkg.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&encode(ns, env, snapshot))?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn names() -> (Namespace, Environment) {
        (
            Namespace::new("pay").unwrap(),
            Environment::new("prod").unwrap(),
        )
    }

    fn sample() -> Snapshot {
        Snapshot::from_values(7, [("a", json!(1)), ("b.c", json!({"x": [1, 2]}))])
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ns, env) = names();
        write(dir.path(), &ns, &env, &sample()).unwrap();
        let back = read(dir.path(), &ns, &env).unwrap();
        assert_eq!(back.version(), 7);
        assert_eq!(back.to_json(), sample().to_json());
    }

    #[test]
    fn every_kind_of_damage_is_refused() {
        let (ns, env) = names();
        let path = Path::new("x.lkg");
        let good = encode(&ns, &env, &sample());
        let truncated = &good[..good.len() - 5];
        assert!(matches!(
            decode(path, truncated, &ns, &env),
            Err(CacheError::Damaged { .. })
        ));
        let mut flipped = good.clone();
        let at = flipped.len() - 10;
        flipped[at] ^= 0x20;
        assert!(matches!(
            decode(path, &flipped, &ns, &env),
            Err(CacheError::Damaged { .. })
        ));
        let foreign = String::from_utf8(good.clone()).unwrap().replacen(
            "mycosynth-lkg 1",
            "mycosynth-lkg 2",
            1,
        );
        assert!(matches!(
            decode(path, foreign.as_bytes(), &ns, &env),
            Err(CacheError::ForeignFormat { .. })
        ));
        let other = Namespace::new("other").unwrap();
        assert!(matches!(
            decode(path, &good, &other, &env),
            Err(CacheError::WrongNamespace { .. })
        ));
        assert!(matches!(
            decode(path, b"", &ns, &env),
            Err(CacheError::Damaged { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let (ns, env) = names();
            let _ = decode(Path::new("fuzz.lkg"), &bytes, &ns, &env);
        }

        #[test]
        fn mangled_cache_files_never_panic(cut in 0usize..400, flip in 0usize..400, bit in 0u8..8) {
            let (ns, env) = names();
            let mut bytes = encode(&ns, &env, &sample());
            if flip < bytes.len() { bytes[flip] ^= 1 << bit; }
            bytes.truncate(cut.min(bytes.len()));
            let _ = decode(Path::new("fuzz.lkg"), &bytes, &ns, &env);
        }
    }
}
