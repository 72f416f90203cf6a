//! The key every daemon of a facility shares: read once at start from a file only its owner can
//! read, and turned into the Noise pre-shared key that both ends of a link must prove.

use std::{
    fmt,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use blake2::{Blake2s256, Digest as _};

/// Fewest secret bytes a key file must hold.
pub const MIN_KEY_BYTES: usize = 32;

/// Separates the pre-shared key from any other use of the same secret.
const PSK_CONTEXT: &[u8] = b"tango-tracer peer link psk v1";

/// Why a key file is not used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("reading the peer key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Group or others may read (or write) it: the key is no secret any more.
    #[error(
        "the peer key file {path} is accessible to group or others (mode {mode:04o}); \
         make it readable by its owner only: chmod 600 {path}"
    )]
    Exposed { path: PathBuf, mode: u32 },
    /// Not a regular file.
    #[error("the peer key file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    /// Hex text with a digit missing.
    #[error("the peer key file holds {digits} hex digits: an even number is expected")]
    OddHex { digits: usize },
    /// Too few secret bytes.
    #[error(
        "the peer key holds {bytes} byte(s); it needs at least {MIN_KEY_BYTES} random bytes \
         (e.g. head -c 32 /dev/urandom | xxd -p -c 64)"
    )]
    Short { bytes: usize },
}

/// The shared key, as the 32-byte pre-shared key of the Noise handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerKey {
    psk: [u8; 32],
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

impl PeerKey {
    /// Reads the key file: refused when group or others may access it, or when it holds fewer
    /// than [`MIN_KEY_BYTES`] secret bytes.
    pub fn load(path: &Path) -> Result<PeerKey, KeyError> {
        let read_error = |source| KeyError::Read { path: path.to_path_buf(), source };
        let metadata = std::fs::metadata(path).map_err(read_error)?;
        if !metadata.is_file() {
            return Err(KeyError::NotAFile { path: path.to_path_buf() });
        }
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed { path: path.to_path_buf(), mode });
        }
        let content = std::fs::read(path).map_err(read_error)?;
        PeerKey::from_file_content(&content)
    }

    /// The secret in a key file's content: hex text (whitespace ignored, at least 64 digits),
    /// else the raw bytes (at least 32).
    pub fn from_file_content(content: &[u8]) -> Result<PeerKey, KeyError> {
        let digits: Vec<u8> = content.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.is_empty() && digits.iter().all(u8::is_ascii_hexdigit) {
            // Hex text: the secret is what the digits encode, whether or not it is long enough.
            let secret = hex::decode(&digits).map_err(|_| KeyError::OddHex { digits: digits.len() })?;
            return PeerKey::from_secret(&secret);
        }
        PeerKey::from_secret(content)
    }

    /// The key from its secret bytes.
    pub fn from_secret(secret: &[u8]) -> Result<PeerKey, KeyError> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(KeyError::Short { bytes: secret.len() });
        }
        let mut hash = Blake2s256::new();
        hash.update(PSK_CONTEXT);
        hash.update(secret);
        Ok(PeerKey { psk: hash.finalize().into() })
    }

    pub(super) fn psk(&self) -> &[u8; 32] {
        &self.psk
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "tests"
    )]

    use std::io::Write as _;

    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn key_file(content: &[u8], mode: u32) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.path.join("key");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    /// A directory removed when the test ends.
    mod tempdir {
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Dir {
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path =
                    std::env::temp_dir().join(format!("tango-tracer-peer-key-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&path).unwrap();
                Dir { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    #[test]
    fn hex_text_with_a_newline_is_the_bytes_it_encodes() {
        let (_dir, path) = key_file(format!("{HEX}\n").as_bytes(), 0o600);
        let key = PeerKey::load(&path).unwrap();
        assert_eq!(key, PeerKey::from_secret(&hex::decode(HEX).unwrap()).unwrap());
        // Not the text itself.
        assert_ne!(key, PeerKey::from_secret(HEX.as_bytes()).unwrap());
        // Upper case and wrapped lines are the same key.
        let wrapped = format!("{}\n{}\n", HEX[..32].to_uppercase(), &HEX[32..]);
        assert_eq!(PeerKey::from_file_content(wrapped.as_bytes()).unwrap(), key);
    }

    #[test]
    fn raw_bytes_of_32_or_more_are_a_key() {
        let raw: Vec<u8> = (0..32u8).map(|b| b.wrapping_mul(37).wrapping_add(200)).collect();
        let (_dir, path) = key_file(&raw, 0o400);
        assert_eq!(PeerKey::load(&path).unwrap(), PeerKey::from_secret(&raw).unwrap());
        let other: Vec<u8> = raw.iter().map(|b| b ^ 1).collect();
        assert_ne!(PeerKey::from_secret(&raw).unwrap(), PeerKey::from_secret(&other).unwrap());
    }

    #[test]
    fn short_keys_are_refused() {
        // 62 hex digits: 31 bytes.
        let (_dir, path) = key_file(&HEX.as_bytes()[..62], 0o600);
        assert!(matches!(PeerKey::load(&path), Err(KeyError::Short { bytes: 31 })));
        let (_dir, path) = key_file(&[7u8; 31], 0o600);
        assert!(matches!(PeerKey::load(&path), Err(KeyError::Short { bytes: 31 })));
        let (_dir, path) = key_file(&HEX.as_bytes()[..63], 0o600);
        assert!(matches!(PeerKey::load(&path), Err(KeyError::OddHex { digits: 63 })));
        let (_dir, path) = key_file(b"", 0o600);
        assert!(matches!(PeerKey::load(&path), Err(KeyError::Short { bytes: 0 })));
    }

    #[test]
    fn a_file_group_or_others_can_access_is_refused() {
        for mode in [0o640, 0o604, 0o644, 0o660, 0o602] {
            let (_dir, path) = key_file(HEX.as_bytes(), mode);
            let error = PeerKey::load(&path).unwrap_err();
            assert!(matches!(error, KeyError::Exposed { .. }), "mode {mode:o}: {error}");
            assert!(error.to_string().contains("chmod 600"), "{error}");
        }
        let missing = std::env::temp_dir().join("tango-tracer-no-such-key");
        assert!(matches!(PeerKey::load(&missing), Err(KeyError::Read { .. })));
    }

    #[test]
    fn the_key_is_not_printed() {
        let key = PeerKey::from_file_content(HEX.as_bytes()).unwrap();
        assert_eq!(format!("{key:?}"), "PeerKey(..)");
    }
}
