//! Publishing a version into a model root that other trainers and running servers share.
//!
//! Several trainers may publish into one root at once, a trainer may be killed half-way,
//! and servers (which may mount the root read-only and take no lock) may be reading the
//! version `current` names, or one they loaded a moment ago. So:
//!
//! - a version is staged in `.tmp-<version>/` while its writer holds an exclusive lock on
//!   `.tmp-<version>.lock` beside it (taken before the directory exists), so a staging
//!   directory whose lock is free belongs to a dead writer and is removed at the next
//!   publish;
//! - moving the staged directory into place, replacing `current` (through a temporary
//!   name unique to the version) and pruning happen under an exclusive lock on
//!   `.publish.lock`, one publisher at a time, so `current` always names a complete
//!   version and prune never removes the one it names;
//! - prune keeps the version `current` names plus the newest `keep − 1` others, and
//!   every version published less than `grace` ago, so a server that loaded a version
//!   just before a newer one went live keeps its files while it reloads.
//!
//! The locks are advisory `flock`s: they vanish with the process that held them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::format::{by_age, is_version_name, CURRENT};
use crate::error::{Error, Result};

/// The lock serialising publish and prune in a model root.
const PUBLISH_LOCK: &str = ".publish.lock";

/// Which versions a publish keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Versions kept: the current one plus the newest `keep − 1` others (at least 1).
    pub keep: usize,
    /// Versions published more recently than this are never removed.
    pub grace: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep: 3,
            grace: Duration::from_secs(600),
        }
    }
}

/// A version being written: its staging directory and the lock that says its writer is
/// alive.
pub(crate) struct Staging {
    root: PathBuf,
    version: String,
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl Staging {
    /// Creates `.tmp-<version>/` under `root`, holding its lock.
    pub(crate) fn begin(root: &Path, version: &str) -> Result<Staging> {
        fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let lock_path = root.join(format!(".tmp-{version}.lock"));
        let lock = lock_file_at(&lock_path)?;
        let dir = root.join(format!(".tmp-{version}"));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Staging {
            root: root.to_path_buf(),
            version: version.to_string(),
            dir,
            lock_path,
            _lock: lock,
        })
    }

    /// Where the version's files are written.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the staged version into place, points `current` at it, removes what dead
    /// writers left behind and prunes; returns the version directory.
    pub(crate) fn publish(self, retention: Retention) -> Result<PathBuf> {
        sync_dir(&self.dir)?;
        let publish_path = self.root.join(PUBLISH_LOCK);
        let publish = open_lock(&publish_path)?;
        publish.lock().map_err(|e| Error::io(&publish_path, e))?;
        let dest = self.root.join(&self.version);
        fs::rename(&self.dir, &dest).map_err(|e| Error::io(&dest, e))?;
        sync_dir(&self.root)?;
        let pointer_tmp = self.root.join(format!(".current-{}.tmp", self.version));
        {
            let mut f = File::create(&pointer_tmp).map_err(|e| Error::io(&pointer_tmp, e))?;
            f.write_all(format!("{}\n", self.version).as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::io(&pointer_tmp, e))?;
        }
        let pointer = self.root.join(CURRENT);
        fs::rename(&pointer_tmp, &pointer).map_err(|e| Error::io(&pointer, e))?;
        sync_dir(&self.root)?;
        // Our staging lock file has done its job; the directory it guarded is gone.
        let _ = fs::remove_file(&self.lock_path);
        remove_abandoned(&self.root)?;
        prune(&self.root, retention, &self.version)?;
        Ok(dest)
    }
}

fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir, e))
}

/// Opens and locks the file at `path`, making sure the lock is on the file the path
/// names: a cleaner may remove an unlocked lock file between our open and our lock.
fn lock_file_at(path: &Path) -> Result<File> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let file = open_lock(path)?;
        file.lock().map_err(|e| Error::io(path, e))?;
        let held = file.metadata().map_err(|e| Error::io(path, e))?;
        match fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(file),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(path, e)),
        }
    }
}

/// Whether nobody holds the lock at `path` (taking it for the caller if so).
fn abandoned(path: &Path) -> Result<Option<File>> {
    let lock = open_lock(path)?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

/// Removes staging directories (and lock files) of writers that are gone, and pointer
/// temporaries of publishers that died. Runs under the publish lock.
fn remove_abandoned(root: &Path) -> Result<()> {
    for entry in fs::read_dir(root).map_err(|e| Error::io(root, e))?.filter_map(|e| e.ok()) {
        let Ok(name) = entry.file_name().into_string() else { continue };
        let path = entry.path();
        if name.starts_with(".current") && name.ends_with(".tmp") {
            // Only ever written under the publish lock, which we hold.
            let _ = fs::remove_file(&path);
        } else if let Some(version) = name.strip_prefix(".tmp-") {
            let version = version.strip_suffix(".lock").unwrap_or(version);
            let lock_path = root.join(format!(".tmp-{version}.lock"));
            if let Some(_held) = abandoned(&lock_path)? {
                let dir = root.join(format!(".tmp-{version}"));
                if dir.is_dir() {
                    fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                }
                let _ = fs::remove_file(&lock_path);
            }
        }
    }
    Ok(())
}

/// Removes old versions: all but the one `current` names and the newest `keep − 1`
/// others, never one published within the grace period. Runs under the publish lock.
pub(crate) fn prune(root: &Path, retention: Retention, current: &str) -> Result<()> {
    let mut versions: Vec<String> = fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_version_name(n))
        .collect();
    versions.sort_by(by_age);
    versions.reverse();
    // `current` is always kept and counts as one of the `keep`; the rest are the newest
    // others.
    versions.retain(|v| v != current);
    let now = SystemTime::now();
    for old in versions.iter().skip(retention.keep.max(1) - 1) {
        let path = root.join(old);
        let young = fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() < retention.grace);
        if !young {
            fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}
