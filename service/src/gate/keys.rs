//! API keys: read from a file and/or `AFFINITY_API_KEYS`, held only as SHA-256
//! digests, compared in constant time, and swapped in whole when the file changes.
//!
//! A line is `ROLE KEY`, where `KEY` is the key itself (at least 16 characters, none of
//! them whitespace, `#` or `,`) or `sha256:HEX`, its digest (so a key file need not hold
//! the secret). Blank lines and `#` comments are skipped; entries may also be separated
//! by `,` (handy in the environment variable). A file that fails to
//! parse on a later read is logged and the keys in force stay: a typo never locks
//! everyone out, nor lets everyone in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::access::Role;

/// One set of keys.
#[derive(Default)]
pub struct ApiKeys {
    digests: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Digests are not secrets, but nothing about keys goes to logs.
        f.debug_struct("ApiKeys").field("count", &self.digests.len()).finish()
    }
}

impl ApiKeys {
    /// Parses key lines; `origin` names the source in errors (`FILE:LINE`).
    ///
    /// # Errors
    /// A line without a known role and a key, or a malformed digest.
    pub fn parse(text: &str, origin: &str) -> Result<ApiKeys, String> {
        let mut digests = Vec::new();
        for (n, line) in text.lines().enumerate() {
            // A comment starts at a `#` that begins the line or follows whitespace (a `#`
            // inside a key is part of it).
            let line = match line.char_indices().find(|&(i, c)| c == '#' && (i == 0 || line[..i].ends_with(char::is_whitespace))) {
                Some((i, _)) => &line[..i],
                None => line,
            };
            for entry in line.split(',') {
                let entry = entry.trim();
                if entry.is_empty() {
                    continue;
                }
                let at = format!("{origin}:{}", n + 1);
                // Messages never echo a token: a line written the wrong way round would
                // put the key in the log.
                let (role, key) = entry
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| format!("{at}: expected `ROLE KEY` (roles: read, write, admin)"))?;
                let role = Role::parse(role).ok_or_else(|| format!("{at}: the first word is not a role (expected `ROLE KEY`; roles: read, write, admin)"))?;
                let key = key.trim();
                if key.contains(char::is_whitespace) {
                    return Err(format!("{at}: a key holds no whitespace (expected `ROLE KEY`)"));
                }
                let digest = match key.strip_prefix("sha256:") {
                    Some(hex_digest) => {
                        let bytes = hex::decode(hex_digest).map_err(|_| format!("{at}: `sha256:` must be followed by 64 hex digits"))?;
                        <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| format!("{at}: `sha256:` must be followed by 64 hex digits"))?
                    }
                    None if key.len() < 16 => return Err(format!("{at}: keys must be at least 16 characters")),
                    None => Sha256::digest(key.as_bytes()).into(),
                };
                digests.push((digest, role));
            }
        }
        Ok(ApiKeys { digests })
    }

    /// Whether no key is configured (every RPC is then open).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// The role of `presented`, if it is a key. Every stored digest is compared, in
    /// constant time, whichever matches.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (stored, role) in &self.digests {
            if bool::from(stored.ct_eq(&digest)) {
                found = found.max(Some(*role));
            }
        }
        found
    }
}

/// The keys in force, and where they come from.
pub struct KeyStore {
    current: ArcSwap<ApiKeys>,
    file: Option<PathBuf>,
    env: Option<String>,
    /// Digest of the file's text last read, to skip re-parsing an unchanged file.
    file_digest: std::sync::Mutex<[u8; 32]>,
}

impl KeyStore {
    /// No keys: every RPC open.
    pub fn open() -> Arc<KeyStore> {
        Arc::new(KeyStore {
            current: ArcSwap::from_pointee(ApiKeys::default()),
            file: None,
            env: None,
            file_digest: std::sync::Mutex::new([0; 32]),
        })
    }

    /// Keys from `file` (if any) and the text of `AFFINITY_API_KEYS` (if any).
    ///
    /// # Errors
    /// Either source cannot be read or parsed.
    pub fn load(file: Option<&Path>, env: Option<String>) -> Result<Arc<KeyStore>, String> {
        let store = KeyStore {
            current: ArcSwap::from_pointee(ApiKeys::default()),
            file: file.map(Path::to_path_buf),
            env,
            file_digest: std::sync::Mutex::new([0; 32]),
        };
        store.reload()?;
        Ok(Arc::new(store))
    }

    /// The keys in force now.
    pub fn keys(&self) -> arc_swap::Guard<Arc<ApiKeys>> {
        self.current.load()
    }

    /// Re-reads the sources; returns whether the keys changed. On error the keys in force
    /// stay.
    ///
    /// # Errors
    /// A source cannot be read or parsed.
    pub fn reload(&self) -> Result<bool, String> {
        let mut keys = match &self.env {
            Some(text) => ApiKeys::parse(text, "AFFINITY_API_KEYS")?,
            None => ApiKeys::default(),
        };
        let mut changed = false;
        if let Some(file) = &self.file {
            let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            let mut last = self.file_digest.lock().unwrap_or_else(|p| p.into_inner());
            if *last == digest {
                return Ok(false);
            }
            let from_file = ApiKeys::parse(&text, &file.display().to_string())?;
            // A configured file that holds no key (emptied, or caught mid-write) is a
            // mistake, never a way to open every RPC.
            if from_file.is_empty() {
                return Err(format!("{} holds no key; the server keeps the keys it had (or does not start)", file.display()));
            }
            keys.digests.extend(from_file.digests);
            *last = digest;
            changed = true;
        }
        if keys.is_empty() && self.env.is_some() {
            return Err("AFFINITY_API_KEYS is set but holds no key".into());
        }
        self.current.store(Arc::new(keys));
        Ok(changed)
    }

    /// Whether there is a file to watch.
    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_match_by_digest_and_bad_lines_are_named() {
        let digest = hex::encode(Sha256::digest(b"writer-key-0123456789"));
        let keys = ApiKeys::parse(
            &format!("# keys\nread reader-key-0123456789\nwrite sha256:{digest}\n\nadmin admin-key-0123456789 # ops\n"),
            "keys.txt",
        )
        .unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys.role_of("reader-key-0123456789"), Some(Role::Read));
        assert_eq!(keys.role_of("writer-key-0123456789"), Some(Role::Write));
        assert_eq!(keys.role_of("admin-key-0123456789"), Some(Role::Admin));
        assert_eq!(keys.role_of("reader-key-012345678"), None);
        assert!(format!("{keys:?}").contains("count: 3"));
        let e = ApiKeys::parse("read ok-key-0123456789\nroot x-key-0123456789\n", "keys.txt").unwrap_err();
        assert!(e.starts_with("keys.txt:2:") && e.contains("not a role"), "{e}");
        let e = ApiKeys::parse("secret-key-0123456789 read\n", "keys.txt").unwrap_err();
        assert!(!e.contains("secret-key"), "a key written the wrong way round stays out of the message: {e}");
        let hashed = ApiKeys::parse("read a#key-0123456789abc # a comment\n", "k").unwrap();
        assert_eq!(hashed.role_of("a#key-0123456789abc"), Some(Role::Read), "a `#` inside a key is part of it");
        assert!(ApiKeys::parse("read short", "k").unwrap_err().contains("16"));
        assert!(ApiKeys::parse("read sha256:abc", "k").unwrap_err().contains("64 hex"));
        let env = ApiKeys::parse("read a-key-0123456789abc, admin b-key-0123456789abc", "AFFINITY_API_KEYS").unwrap();
        assert_eq!(env.role_of("b-key-0123456789abc"), Some(Role::Admin));
    }

    #[test]
    fn a_changed_file_rotates_the_keys_and_a_broken_one_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "read old-key-0123456789\n").unwrap();
        let store = KeyStore::load(Some(&file), Some("admin env-key-0123456789".into())).unwrap();
        assert_eq!(store.keys().role_of("old-key-0123456789"), Some(Role::Read));
        assert_eq!(store.keys().role_of("env-key-0123456789"), Some(Role::Admin));
        assert_eq!(store.reload(), Ok(false), "unchanged");
        std::fs::write(&file, "read new-key-0123456789\n").unwrap();
        assert_eq!(store.reload(), Ok(true));
        assert_eq!(store.keys().role_of("old-key-0123456789"), None);
        assert_eq!(store.keys().role_of("new-key-0123456789"), Some(Role::Read));
        std::fs::write(&file, "reader broken\n").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(store.keys().role_of("new-key-0123456789"), Some(Role::Read), "kept");
        std::fs::write(&file, "# emptied\n").unwrap();
        assert!(store.reload().unwrap_err().contains("holds no key"));
        assert_eq!(store.keys().role_of("new-key-0123456789"), Some(Role::Read), "an empty file never opens every RPC");
        assert!(KeyStore::load(Some(&file), None).is_err(), "nor does it at start");
    }
}
