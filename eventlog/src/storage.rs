//! Where segments live: the file system, or (in tests) anything that behaves like it.
//!
//! The log only needs to list segments, read one whole, create one, reopen the last one
//! for appending after cutting it to its valid length, and write + sync. Behind a trait,
//! a test can lose every byte that was not synced, which is what a power cut does and a
//! killed process does not.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{io, Result};

/// Appends to one segment.
pub trait SegmentWriter: Send {
    /// Writes all of `buf` at the end of the segment.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()>;
    /// Makes everything written durable.
    fn sync(&mut self) -> std::io::Result<()>;
}

/// Segment files of one log.
pub trait Storage: Send {
    /// First sequence numbers of every segment, ascending.
    fn list(&self) -> Result<Vec<u64>>;
    /// The whole content of segment `first`.
    fn read(&self, first: u64) -> Result<Vec<u8>>;
    /// Creates segment `first` (empty) and returns its writer.
    fn create(&mut self, first: u64) -> Result<Box<dyn SegmentWriter>>;
    /// Cuts segment `first` to `len` bytes and returns a writer appending after them.
    fn append(&mut self, first: u64, len: u64) -> Result<Box<dyn SegmentWriter>>;
    /// How to name segment `first` in messages (its path).
    fn describe(&self, first: u64) -> String;
    /// Replaces segment `first` with `bytes` atomically and durably (compaction).
    fn replace(&mut self, first: u64, bytes: &[u8]) -> Result<()>;
    /// When segment `first` was last written.
    fn modified(&self, first: u64) -> Result<std::time::SystemTime>;
    /// Removes segment `first` (retention).
    fn remove(&mut self, first: u64) -> Result<()>;
}

/// Segments as files `<first seq, 20 digits>.seg` in one directory.
pub struct FsStorage {
    dir: PathBuf,
    /// The writer's exclusive lock on `dir/.lock`, held while the storage lives.
    _lock: Option<File>,
}

impl FsStorage {
    /// Uses (and creates if needed) directory `dir` for writing, holding an exclusive
    /// advisory lock on `dir/.lock`: one writer per log.
    ///
    /// # Errors
    /// The directory cannot be created, or another process writes this log.
    pub fn new(dir: &Path) -> Result<FsStorage> {
        fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let path = dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("open {}", path.display())))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => crate::LogError::Locked(dir.display().to_string()),
            fs::TryLockError::Error(e) => crate::LogError::Io {
                what: format!("lock {}", path.display()),
                source: e,
            },
        })?;
        Ok(FsStorage {
            dir: dir.to_path_buf(),
            _lock: Some(lock),
        })
    }

    /// Uses directory `dir` as it is, without a lock (for readers).
    pub fn existing(dir: &Path) -> FsStorage {
        FsStorage {
            dir: dir.to_path_buf(),
            _lock: None,
        }
    }

    fn path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}.seg"))
    }

    /// Makes a new directory entry durable.
    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("sync {}", self.dir.display())))
    }
}

struct FsWriter(File);

impl SegmentWriter for FsWriter {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_all(buf)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.0.sync_data()
    }
}

impl Storage for FsStorage {
    fn list(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(io(format!("list {}", self.dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io(format!("list {}", self.dir.display())))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else { continue };
            if stem.len() == 20 {
                if let Ok(first) = stem.parse::<u64>() {
                    out.push(first);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn read(&self, first: u64) -> Result<Vec<u8>> {
        let path = self.path(first);
        fs::read(&path).map_err(io(format!("read {}", path.display())))
    }

    fn create(&mut self, first: u64) -> Result<Box<dyn SegmentWriter>> {
        let path = self.path(first);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("create {}", path.display())))?;
        self.sync_dir()?;
        Ok(Box::new(FsWriter(file)))
    }

    fn append(&mut self, first: u64, len: u64) -> Result<Box<dyn SegmentWriter>> {
        let path = self.path(first);
        let what = format!("open {}", path.display());
        let mut file = OpenOptions::new().write(true).open(&path).map_err(io(what.clone()))?;
        if file.metadata().map_err(io(what.clone()))?.len() != len {
            file.set_len(len).map_err(io(format!("cut {}", path.display())))?;
            file.sync_all().map_err(io(format!("sync {}", path.display())))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io(what))?;
        Ok(Box::new(FsWriter(file)))
    }

    fn describe(&self, first: u64) -> String {
        self.path(first).display().to_string()
    }

    fn modified(&self, first: u64) -> Result<std::time::SystemTime> {
        let path = self.path(first);
        fs::metadata(&path).and_then(|m| m.modified()).map_err(io(format!("stat {}", path.display())))
    }

    fn remove(&mut self, first: u64) -> Result<()> {
        let path = self.path(first);
        fs::remove_file(&path).map_err(io(format!("remove {}", path.display())))?;
        self.sync_dir()
    }

    fn replace(&mut self, first: u64, bytes: &[u8]) -> Result<()> {
        let path = self.path(first);
        let tmp = self.dir.join(format!("{first:020}.compacting"));
        let mut f = File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        f.write_all(bytes).map_err(io(format!("write {}", tmp.display())))?;
        f.sync_all().map_err(io(format!("sync {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io(format!("replace {}", path.display())))?;
        self.sync_dir()
    }
}
