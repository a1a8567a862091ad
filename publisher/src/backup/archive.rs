//! The backup archive's bytes: a magic line, frames, and a SHA-256 trailer. Pure: no I/O but
//! the writer it is handed.
//!
//! ```text
//! "MYCOSYNTH-BACKUP" u32-le format
//! frame*      = kind u8 | length u32-le | crc32 u32-le (of kind, length and payload) | payload
//! trailer     = SHA-256 of every byte before it (32 bytes)
//! ```
//!
//! The first frame is the manifest (JSON), the last an end frame (JSON counts). Every frame
//! carries its own CRC-32, so a damaged byte is named by the frame it is in; the trailer covers
//! the whole file, lengths and order included, so nothing can be cut, swapped or appended
//! unnoticed. [`read`] checks all of it before anything is returned.

use std::io::Write;

use sha2::{Digest, Sha256};

/// The first bytes of every archive.
pub const MAGIC: &[u8; 16] = b"MYCOSYNTH-BACKUP";
/// The archive format this build writes and reads.
pub const FORMAT: u32 = 1;
const HEADER_LEN: usize = MAGIC.len() + 4;
const FRAME_HEADER_LEN: usize = 9;
const TRAILER_LEN: usize = 32;
/// Largest frame this build accepts (a KV value is at most 8 MiB).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// JSON [`super::Manifest`].
    Manifest = 1,
    /// One KV entry: bucket, key, stored bytes.
    Kv = 2,
    /// The data keys, encrypted with the operator's key.
    SealedKeys = 3,
    /// One audit record: stream sequence, subject, message id, stored bytes.
    Audit = 4,
    /// JSON [`super::Counts`]: the last frame.
    End = 5,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Manifest,
            2 => Kind::Kv,
            3 => Kind::SealedKeys,
            4 => Kind::Audit,
            5 => Kind::End,
            _ => return None,
        })
    }

    /// The kind's name in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Manifest => "manifest",
            Kind::Kv => "KV record",
            Kind::SealedKeys => "sealed data keys",
            Kind::Audit => "audit record",
            Kind::End => "end",
        }
    }
}

/// Why an archive was refused. Each names where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// Not a Mycosynth backup at all.
    #[error("not a Mycosynth backup: the file does not start with {MAGIC:?}")]
    NotAnArchive,
    /// Another format version.
    #[error("archive format {0} is not supported (this build reads format {FORMAT})")]
    Format(u32),
    /// The file ends before the end frame and the checksum.
    #[error("truncated: the file ends at byte {at} inside frame {frame} (no end frame and checksum after it)")]
    Truncated {
        /// Frame index (0: the manifest).
        frame: usize,
        /// Byte offset where it ends.
        at: usize,
    },
    /// A frame's bytes do not match its CRC-32.
    #[error("damaged: frame {frame} at byte {at} ({kind}) does not match its CRC-32")]
    Frame {
        /// Frame index.
        frame: usize,
        /// Byte offset of the frame.
        at: usize,
        /// What the frame says it holds.
        kind: String,
    },
    /// The whole-file SHA-256 does not match.
    #[error("damaged: the SHA-256 of the archive does not match its trailer (bytes 0..{0})")]
    Digest(usize),
    /// The frames are well formed but their content is not what a backup holds.
    #[error("damaged: frame {frame} ({kind}): {message}")]
    Content {
        /// Frame index.
        frame: usize,
        /// What the frame holds.
        kind: String,
        /// What is wrong.
        message: String,
    },
    /// Bytes after the trailer.
    #[error("damaged: {0} bytes after the end of the archive")]
    Trailing(usize),
}

/// Writes frames, hashing as it goes.
pub struct Writer<W: Write> {
    out: W,
    digest: Sha256,
    /// Bytes written so far.
    pub written: u64,
}

impl<W: Write> Writer<W> {
    /// Starts an archive: writes the magic and format.
    pub fn new(out: W) -> std::io::Result<Writer<W>> {
        let mut writer = Writer {
            out,
            digest: Sha256::new(),
            written: 0,
        };
        writer.raw(MAGIC)?;
        writer.raw(&FORMAT.to_le_bytes())?;
        Ok(writer)
    }

    fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.digest.update(bytes);
        self.written += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    /// Writes one frame of `kind` whose payload is the concatenation of `parts`.
    pub fn frame(&mut self, kind: Kind, parts: &[&[u8]]) -> std::io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len32 = u32::try_from(len)
            .ok()
            .filter(|l| (*l as usize) <= MAX_FRAME)
            .ok_or_else(|| std::io::Error::other(format!("a frame of {len} bytes is too large")))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[kind as u8]);
        crc.update(&len32.to_le_bytes());
        for part in parts {
            crc.update(part);
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        header[0] = kind as u8;
        header[1..5].copy_from_slice(&len32.to_le_bytes());
        header[5..9].copy_from_slice(&crc.finalize().to_le_bytes());
        self.raw(&header)?;
        for part in parts {
            self.raw(part)?;
        }
        Ok(())
    }

    /// Writes the trailer and returns the writer and the archive's SHA-256 (hex).
    pub fn finish(mut self) -> std::io::Result<(W, String)> {
        let digest = std::mem::take(&mut self.digest).finalize();
        self.out.write_all(&digest)?;
        self.written += TRAILER_LEN as u64;
        self.out.flush()?;
        Ok((self.out, hex(&digest)))
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One checked frame of an archive read by [`read`].
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Its index (0: the manifest).
    pub index: usize,
    /// What it holds.
    pub kind: Kind,
    /// Its payload.
    pub payload: &'a [u8],
}

/// Checks a whole archive (magic, format, every frame's CRC, the order of manifest and end,
/// the trailer) and returns its frames, manifest first and end frame last.
pub fn read(bytes: &[u8]) -> Result<Vec<Frame<'_>>, ArchiveError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(ArchiveError::NotAnArchive);
    }
    let format = bytes
        .get(MAGIC.len()..HEADER_LEN)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or(ArchiveError::Truncated {
            frame: 0,
            at: bytes.len(),
        })?;
    if format != FORMAT {
        return Err(ArchiveError::Format(format));
    }
    let mut frames = Vec::new();
    let mut at = HEADER_LEN;
    loop {
        let index = frames.len();
        let truncated = ArchiveError::Truncated {
            frame: index,
            at: bytes.len(),
        };
        let header = bytes
            .get(at..at + FRAME_HEADER_LEN)
            .ok_or_else(|| truncated.clone())?;
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let crc = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
        let claimed = Kind::from_byte(header[0]);
        let damaged = || ArchiveError::Frame {
            frame: index,
            at,
            kind: claimed.map_or_else(
                || format!("unknown kind {}", header[0]),
                |k| k.name().to_owned(),
            ),
        };
        if len > MAX_FRAME {
            return Err(damaged());
        }
        let start = at + FRAME_HEADER_LEN;
        let payload = bytes.get(start..start + len).ok_or(truncated)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[..5]);
        hasher.update(payload);
        let kind = match claimed {
            Some(kind) if hasher.finalize() == crc => kind,
            _ => return Err(damaged()),
        };
        let expected_first = index == 0;
        if (kind == Kind::Manifest) != expected_first {
            return Err(ArchiveError::Content {
                frame: index,
                kind: kind.name().into(),
                message: "the manifest must be the first frame, and only it".into(),
            });
        }
        frames.push(Frame {
            index,
            kind,
            payload,
        });
        at = start + len;
        if kind == Kind::End {
            break;
        }
    }
    let trailer = bytes
        .get(at..at + TRAILER_LEN)
        .ok_or(ArchiveError::Truncated {
            frame: frames.len(),
            at: bytes.len(),
        })?;
    if Sha256::digest(&bytes[..at]).as_slice() != trailer {
        return Err(ArchiveError::Digest(at));
    }
    if bytes.len() > at + TRAILER_LEN {
        return Err(ArchiveError::Trailing(bytes.len() - at - TRAILER_LEN));
    }
    Ok(frames)
}

/// Length-prefixed fields inside a payload: u16 lengths for names, the rest as is.
pub fn name_field(name: &str) -> Vec<u8> {
    let bytes = name.as_bytes();
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + bytes.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
    out
}

/// Reads a [`name_field`] from the front of `bytes`; returns it and the rest.
pub fn take_name(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let len = usize::from(u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]));
    let name = std::str::from_utf8(bytes.get(2..2 + len)?).ok()?;
    Some((name, &bytes[2 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut writer = Writer::new(Vec::new()).unwrap();
        writer.frame(Kind::Manifest, &[b"{}"]).unwrap();
        writer
            .frame(
                Kind::Kv,
                &[&name_field("bucket"), &name_field("a.b"), b"{\"v\":1}"],
            )
            .unwrap();
        writer.frame(Kind::End, &[b"{}"]).unwrap();
        writer.finish().unwrap().0
    }

    #[test]
    fn an_archive_reads_back_frame_by_frame() {
        let bytes = sample();
        let frames = read(&bytes).unwrap();
        assert_eq!(frames.len(), 3);
        let (bucket, rest) = take_name(frames[1].payload).unwrap();
        let (key, value) = take_name(rest).unwrap();
        assert_eq!((bucket, key, value), ("bucket", "a.b", &b"{\"v\":1}"[..]));
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_refused() {
        let bytes = sample();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                assert!(read(&damaged).is_err(), "byte {i} bit {bit} went unnoticed");
            }
        }
        for len in 0..bytes.len() {
            assert!(
                read(&bytes[..len]).is_err(),
                "truncated to {len} went unnoticed"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(read(&longer).unwrap_err(), ArchiveError::Trailing(1));
    }

    #[test]
    fn a_damaged_frame_is_named() {
        let mut bytes = sample();
        let last_payload_byte = bytes.len() - TRAILER_LEN - 12;
        bytes[last_payload_byte] ^= 4;
        let err = read(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("frame 1") && err.contains("KV record"),
            "{err}"
        );
    }
}
