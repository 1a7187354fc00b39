//! Users who asked to be forgotten, kept so that nothing brings them back.
//!
//! The list lives beside the log (`deleted-users.txt`) and holds keyed hashes, not ids:
//! SHA-256 of a per-directory random key (`deleted-users.key`) followed by the id, one
//! hex line each. The server consults it for every request and replay; the trainer drops
//! every input event (files included) of a listed user, so a retrain never restores one.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{io, Result};

const KEY_FILE: &str = "deleted-users.key";
const LIST_FILE: &str = "deleted-users.txt";

/// The deleted-users list of one event-log directory.
#[derive(Debug, Clone, Default)]
pub struct DeletedUsers {
    dir: PathBuf,
    key: Vec<u8>,
    hashes: HashSet<String>,
}

impl DeletedUsers {
    /// Reads the list in `dir`; an absent list is empty (its key is made on first use).
    ///
    /// # Errors
    /// A file exists but cannot be read.
    pub fn load(dir: &Path) -> Result<DeletedUsers> {
        let read = |name: &str| -> Result<Option<String>> {
            let path = dir.join(name);
            match fs::read_to_string(&path) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(format!("read {}", path.display()))(e)),
            }
        };
        let key = read(KEY_FILE)?.map(|k| k.trim().as_bytes().to_vec()).unwrap_or_default();
        let hashes = read(LIST_FILE)?.unwrap_or_default().lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
        Ok(DeletedUsers {
            dir: dir.to_path_buf(),
            key,
            hashes,
        })
    }

    fn hash(&self, user_id: &str) -> String {
        let mut h = Sha256::new();
        h.update(&self.key);
        h.update(user_id.as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `user_id` was deleted.
    pub fn contains(&self, user_id: &str) -> bool {
        !self.hashes.is_empty() && self.hashes.contains(&self.hash(user_id))
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Adds `user_id` durably (synced before it returns).
    ///
    /// # Errors
    /// The list or its key cannot be written.
    pub fn add(&mut self, user_id: &str) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(io(format!("create {}", self.dir.display())))?;
        if self.key.is_empty() {
            // A CSPRNG seeded by the operating system.
            let key: String = (0..4).map(|_| format!("{:016x}", rand::random::<u64>())).collect();
            let path = self.dir.join(KEY_FILE);
            write_synced(&path, key.as_bytes(), false)?;
            self.key = key.into_bytes();
        }
        let hash = self.hash(user_id);
        if self.hashes.insert(hash.clone()) {
            write_synced(&self.dir.join(LIST_FILE), format!("{hash}\n").as_bytes(), true)?;
        }
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8], append: bool) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(path)
        .map_err(io(format!("open {}", path.display())))?;
    f.write_all(bytes).map_err(io(format!("write {}", path.display())))?;
    f.sync_all().map_err(io(format!("sync {}", path.display())))
}

