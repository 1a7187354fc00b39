//! affinity-eventlog: the server's durable record of what storefronts sent.
//!
//! An acknowledged event must survive a crash, and a restarted server must rebuild its
//! live state from what it acknowledged. The log is a directory of append-only segment
//! files named by the sequence number of their first record (`00000000000000000042.seg`).
//! Every record is `[length: u32 LE][crc32 of payload: u32 LE][payload]`, the payload a
//! bincode [`Record`] carrying its own sequence number, so positions survive compaction.
//! Writers append a batch and then [`EventLog::sync`] once for many batches (group
//! commit, driven by the caller); a record is durable once a sync after it returned.
//! When the active segment passes its size limit, the next append starts a new one.
//!
//! Opening scans every segment: a torn or corrupt tail of the *last* segment (a crash
//! mid-write) is cut off with a warning, everything before it kept; damage inside a sealed
//! segment is an error naming the file and offset, since records after it were once
//! acknowledged. All file access goes through [`Storage`], so tests can run the log on a
//! disk that loses every unsynced byte at a simulated power cut.
//!
//! It knows nothing of async runtimes or RPC: the server calls it from a blocking thread.

mod deleted;
mod storage;

use std::ops::Range;
use std::path::Path;

use affinity_core::data::{Event, Item, ItemV1, Membership, SocialEdge, SocialKind};
use serde::{Deserialize, Serialize};

pub use deleted::DeletedUsers;
pub use storage::{FsStorage, SegmentWriter, Storage};

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The file or directory and the operation.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A sealed segment is damaged.
    #[error("{file}: damaged record at byte {offset} ({why}); records after it were acknowledged, so the log is not opened")]
    Corrupt {
        /// The segment file.
        file: String,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// Another process holds the log's lock.
    #[error("{0}: another process writes this event log (one writer per log)")]
    Locked(String),
    /// A record cannot be encoded (never expected).
    #[error("cannot encode a record: {0}")]
    Encode(String),
}

/// Result of log operations.
pub type Result<T> = std::result::Result<T, LogError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogError {
    let what = what.into();
    move |source| LogError::Io { what, source }
}

/// Where an event came from, as the storefront said.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// The shopper's session.
    pub session_id: Option<String>,
    /// Region (e.g. a city or country code).
    pub region: Option<String>,
    /// Device class (e.g. mobile, desktop).
    pub device: Option<String>,
}

/// One logged event: the canonical event plus what the server needs to de-duplicate and
/// attribute it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// The user–item event (timestamp filled in with server time when the client gave none).
    pub event: Event,
    /// The client's id for this event, for de-duplicating retries.
    pub event_id: Option<String>,
    /// Session, region, device.
    pub context: Context,
}

/// An item put on or taken off sale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityChange {
    /// The item.
    pub item_id: String,
    /// Whether it may be recommended.
    pub available: bool,
}

/// A social edge added or removed while serving (`IngestSocialEdges`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocialChange {
    /// The edge, as a `social.csv` row would give it.
    pub edge: SocialEdge,
    /// Whether the edge is taken away (else added, or its weight changed).
    pub removed: bool,
}

impl SocialChange {
    /// Whether the change names `user_id` at either end.
    pub fn names(&self, user_id: &str) -> bool {
        self.edge.user_id == user_id || self.edge.other_id == user_id
    }
}

/// A community membership joined or left while serving (`IngestMemberships`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembershipChange {
    /// The membership, as a `communities.csv` row would give it.
    pub membership: Membership,
    /// Whether the user leaves (else joins).
    pub removed: bool,
}

impl MembershipChange {
    /// Whether the change is `user_id`'s.
    pub fn names(&self, user_id: &str) -> bool {
        self.membership.user_id == user_id
    }
}

/// What a record holds. New kinds are only ever added at the end (records store the
/// variant's position).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Entry {
    /// A user–item event.
    Event(LoggedEvent),
    /// A catalogue change: availability.
    Availability(AvailabilityChange),
    /// A catalogue entry as logs written before item places stored it; read, never written.
    ItemV1(ItemV1),
    /// A catalogue entry written while serving: a new item, or a known item's new entry.
    Item(Item),
    /// A social edge added or removed while serving.
    Social(SocialChange),
    /// A community membership joined or left while serving.
    Membership(MembershipChange),
}

/// Applies the catalogue entries of `entries` (in log order) to `items`: an item entry
/// replaces the item of its id or is added at the end, an availability change sets the
/// flag of the item (one the catalogue does not list is added bare, so an item taken off
/// sale stays off after a retrain without a catalogue file). The log is newer than any
/// catalogue file. Where the file lists an id twice, the first row is the one changed, as
/// training keeps the first. Returns how many entries were applied.
pub fn apply_to_catalogue<'a>(items: &mut Vec<Item>, entries: impl IntoIterator<Item = &'a Entry>) -> usize {
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (n, i) in items.iter().enumerate() {
        at.entry(i.item_id.clone()).or_insert(n);
    }
    let mut applied = 0;
    for entry in entries {
        match entry {
            Entry::Item(_) | Entry::ItemV1(_) => {
                let Some(item) = entry.catalogue_item() else { continue };
                match at.get(&item.item_id) {
                    Some(&n) => items[n] = item,
                    None => {
                        at.insert(item.item_id.clone(), items.len());
                        items.push(item);
                    }
                }
                applied += 1;
            }
            Entry::Availability(change) => {
                match at.get(&change.item_id) {
                    Some(&n) => items[n].available = change.available,
                    None => {
                        at.insert(change.item_id.clone(), items.len());
                        items.push(Item { available: change.available, ..Item::bare(change.item_id.clone()) });
                    }
                }
                applied += 1;
            }
            Entry::Event(_) | Entry::Social(_) | Entry::Membership(_) => {}
        }
    }
    applied
}

/// Applies the membership changes of `entries` (in log order) to `memberships` (as
/// `communities.csv` gave them): a join is appended (repeats count once), a leave removes
/// the pair. Returns how many changes were applied.
pub fn apply_to_memberships<'a>(memberships: &mut Vec<Membership>, entries: impl IntoIterator<Item = &'a Entry>) -> usize {
    fn key(m: &Membership) -> (&str, &str) {
        (m.user_id.as_str(), m.community_id.as_str())
    }
    // The last word on each pair stands, so one pass over the table takes every change
    // (a leave per change rescanning it would cost table × leaves). Joins are appended in
    // the order of their last word, as applying the changes one by one would leave them.
    let mut last: std::collections::HashMap<(&str, &str), (bool, usize, &'a Membership)> = std::collections::HashMap::new();
    let mut applied = 0;
    for entry in entries {
        let Entry::Membership(change) = entry else { continue };
        let m = &change.membership;
        last.insert(key(m), (!change.removed, applied, m));
        applied += 1;
    }
    if last.is_empty() {
        return 0;
    }
    memberships.retain(|m| last.get(&key(m)).is_none_or(|w| w.0));
    let present: std::collections::HashSet<(&str, &str)> = memberships.iter().map(key).collect();
    let mut joins: Vec<(usize, &Membership)> = last.values().filter(|w| w.0 && !present.contains(&key(w.2))).map(|w| (w.1, w.2)).collect();
    drop(present);
    joins.sort_unstable_by_key(|j| j.0);
    memberships.extend(joins.into_iter().map(|(_, m)| m.clone()));
    applied
}

/// Applies the social changes of `entries` (in log order) to `edges` (as `social.csv`
/// gave them), with the live server's meaning: the latest word on each contact stands.
/// An added edge replaces the weight of the same contact (a friendship: both directions);
/// a removed friendship takes away both directions, a removed follow the follower's side
/// only (a friendship between them becomes the other's follow). One pass over `edges`
/// whatever the number of changes. Returns how many changes were applied.
pub fn apply_to_social<'a>(edges: &mut Vec<SocialEdge>, entries: impl IntoIterator<Item = &'a Entry>) -> usize {
    // The last word per directed contact (from → to): `None` removed, else (weight, friend).
    type Word = Option<(f32, bool)>;
    let mut last: std::collections::HashMap<String, std::collections::HashMap<String, (u64, Word)>> = std::collections::HashMap::new();
    let mut applied = 0u64;
    for entry in entries {
        let Entry::Social(change) = entry else { continue };
        applied += 1;
        let e = &change.edge;
        let friend = e.kind == SocialKind::Friend;
        let word = (!change.removed).then_some((e.weight, friend));
        last.entry(e.user_id.clone()).or_default().insert(e.other_id.clone(), (applied, word));
        if friend {
            last.entry(e.other_id.clone()).or_default().insert(e.user_id.clone(), (applied, word));
        }
    }
    if applied == 0 {
        return 0;
    }
    let word = |from: &str, to: &str| last.get(from).and_then(|m| m.get(to)).copied();
    let follow = |from: &str, to: &str, weight: f32| SocialEdge { user_id: from.to_string(), other_id: to.to_string(), kind: SocialKind::Follow, weight };
    // The file's edges keep only the directions no change spoke of.
    let mut kept = Vec::with_capacity(edges.len());
    for edge in edges.drain(..) {
        let forward = word(&edge.user_id, &edge.other_id).is_some();
        match edge.kind {
            SocialKind::Follow if forward => {}
            SocialKind::Follow => kept.push(edge),
            SocialKind::Friend => match (forward, word(&edge.other_id, &edge.user_id).is_some()) {
                (false, false) => kept.push(edge),
                (true, true) => {}
                (true, false) => kept.push(follow(&edge.other_id, &edge.user_id, edge.weight)),
                (false, true) => kept.push(follow(&edge.user_id, &edge.other_id, edge.weight)),
            },
        }
    }
    // Then the contacts the changes set, in log order: a friendship set both ways with one
    // weight stays one friendship; any other direction is a follow.
    let mut set: Vec<(u64, &str, &str, f32, bool)> = last
        .iter()
        .flat_map(|(from, m)| m.iter().filter_map(move |(to, &(at, w))| w.map(|(weight, friend)| (at, from.as_str(), to.as_str(), weight, friend))))
        .collect();
    set.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    for (at, from, to, weight, friend) in set {
        let both = friend && word(to, from) == Some((at, Some((weight, true))));
        match (both, from < to) {
            (true, true) => kept.push(SocialEdge { user_id: from.to_string(), other_id: to.to_string(), kind: SocialKind::Friend, weight }),
            (true, false) => {}
            (false, _) => kept.push(follow(from, to, weight)),
        }
    }
    *edges = kept;
    applied as usize
}

impl Entry {
    /// Whether the entry is about `user_id`: their event, a social edge naming them at
    /// either end, or their membership. What forgetting a user removes.
    pub fn names(&self, user_id: &str) -> bool {
        match self {
            Entry::Event(e) => e.event.user_id == user_id,
            Entry::Social(c) => c.names(user_id),
            Entry::Membership(c) => c.names(user_id),
            Entry::Availability(_) | Entry::Item(_) | Entry::ItemV1(_) => false,
        }
    }

    /// The event, if this entry is one.
    pub fn into_event(self) -> Option<LoggedEvent> {
        match self {
            Entry::Event(e) => Some(e),
            Entry::Availability(_) | Entry::Item(_) | Entry::ItemV1(_) | Entry::Social(_) | Entry::Membership(_) => None,
        }
    }

    /// The catalogue entry, if this entry is one (in the current layout).
    pub fn catalogue_item(&self) -> Option<Item> {
        match self {
            Entry::Item(item) => Some(item.clone()),
            Entry::ItemV1(item) => Some(item.clone().into()),
            Entry::Event(_) | Entry::Availability(_) | Entry::Social(_) | Entry::Membership(_) => None,
        }
    }
}

/// A record: its sequence number (a position in the log) and its entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the log, from 1, never reused.
    pub seq: u64,
    /// What happened.
    pub entry: Entry,
}

/// Tuning of the log.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// A segment past this many bytes is sealed and a new one started.
    pub max_segment_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_segment_bytes: 64 << 20,
        }
    }
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LogMetrics {
    /// Records appended since open.
    pub appended: u64,
    /// Bytes appended since open.
    pub bytes: u64,
    /// Syncs (fsyncs) since open.
    pub syncs: u64,
    /// Segments started since open.
    pub rotations: u64,
    /// Bytes cut off a torn tail at open.
    pub truncated_bytes: u64,
}

/// Bytes of a record header: length and checksum.
const HEADER: usize = 8;

/// Largest payload a record may have (a sanity bound when reading lengths).
const MAX_RECORD: usize = 16 << 20;

/// A segment's scan: its valid records and where the valid part ends.
struct Scan {
    records: Vec<Record>,
    valid_len: u64,
    /// Why the rest (from `valid_len`) is not valid, if there is a rest.
    damage: Option<String>,
    /// Whether the record that stopped the scan was written whole (its checksum holds)
    /// but does not decode: a record of a newer build, never a torn write.
    whole: bool,
}

fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut at = 0usize;
    let mut whole = false;
    let damage = loop {
        if at == bytes.len() {
            break None;
        }
        if bytes.len() - at < HEADER {
            break Some("a record header is cut short".to_string());
        }
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        if len > MAX_RECORD {
            break Some(format!("a record length of {len} bytes"));
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break Some("a record is cut short".to_string());
        };
        if crc32fast::hash(payload) != crc {
            break Some("checksum mismatch".to_string());
        }
        match bincode::deserialize::<Record>(payload) {
            Ok(r) => records.push(r),
            Err(e) => {
                whole = true;
                break Some(format!("a whole record this build cannot decode (written by a newer build?): {e}"));
            }
        }
        at += HEADER + len;
    };
    Scan {
        records,
        valid_len: at as u64,
        damage,
        whole,
    }
}

fn encode(record: &Record, out: &mut Vec<u8>) -> Result<()> {
    let payload = bincode::serialize(record).map_err(|e| LogError::Encode(e.to_string()))?;
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// An open log, ready to append.
pub struct EventLog {
    storage: Box<dyn Storage>,
    options: LogOptions,
    writer: Box<dyn SegmentWriter>,
    /// First sequence number of the active segment (its name).
    active: u64,
    active_len: u64,
    next_seq: u64,
    metrics: LogMetrics,
}

impl EventLog {
    /// Opens (or creates) the log in directory `dir`.
    ///
    /// # Errors
    /// The directory cannot be created or read, or a sealed segment is damaged.
    pub fn open(dir: &Path, options: LogOptions) -> Result<EventLog> {
        EventLog::open_with(Box::new(FsStorage::new(dir)?), options)
    }

    /// Opens the log on any storage (tests use one that loses unsynced bytes).
    ///
    /// # Errors
    /// As [`EventLog::open`].
    pub fn open_with(mut storage: Box<dyn Storage>, options: LogOptions) -> Result<EventLog> {
        let segments = storage.list()?;
        let mut next_seq = 1;
        let mut metrics = LogMetrics::default();
        let mut tail: Option<(u64, u64)> = None;
        for (n, &first) in segments.iter().enumerate() {
            let bytes = storage.read(first)?;
            let s = scan(&bytes);
            if let Some(last) = s.records.last() {
                next_seq = next_seq.max(last.seq + 1);
            }
            next_seq = next_seq.max(first);
            if let Some(why) = s.damage {
                // Only a torn write at the very end may be cut off; a record written
                // whole that this build cannot read (a newer build's) is never dropped.
                if n + 1 < segments.len() || s.whole {
                    return Err(LogError::Corrupt {
                        file: storage.describe(first),
                        offset: s.valid_len,
                        why,
                    });
                }
                let cut = bytes.len() as u64 - s.valid_len;
                tracing::warn!(
                    file = %storage.describe(first),
                    offset = s.valid_len,
                    bytes = cut,
                    %why,
                    "torn tail of the event log cut off (everything before it kept)"
                );
                metrics.truncated_bytes = cut;
            }
            tail = Some((first, s.valid_len));
        }
        let (active, active_len, writer) = match tail {
            Some((first, len)) => (first, len, storage.append(first, len)?),
            None => (next_seq, 0, storage.create(next_seq)?),
        };
        Ok(EventLog {
            storage,
            options,
            writer,
            active,
            active_len,
            next_seq,
            metrics,
        })
    }

    /// Appends `entries` as consecutive records and returns their sequence numbers. They
    /// are durable only after the next [`EventLog::sync`].
    ///
    /// # Errors
    /// The write failed (disk full, I/O error). Records of a failed append may be partly
    /// written; they were never acknowledged, and the next open cuts them off.
    pub fn append(&mut self, entries: &[Entry]) -> Result<Range<u64>> {
        if self.active_len >= self.options.max_segment_bytes {
            self.rotate()?;
        }
        let first = self.next_seq;
        let mut buf = Vec::new();
        for (n, entry) in entries.iter().enumerate() {
            let record = Record {
                seq: first + n as u64,
                entry: entry.clone(),
            };
            encode(&record, &mut buf)?;
        }
        self.writer.write_all(&buf).map_err(io(format!("append to {}", self.storage.describe(self.active))))?;
        self.active_len += buf.len() as u64;
        self.next_seq += entries.len() as u64;
        self.metrics.appended += entries.len() as u64;
        self.metrics.bytes += buf.len() as u64;
        Ok(first..self.next_seq)
    }

    /// Makes everything appended so far durable (one fsync).
    ///
    /// # Errors
    /// The sync failed; nothing since the last successful sync may be acknowledged.
    pub fn sync(&mut self) -> Result<()> {
        self.writer.sync().map_err(io(format!("sync {}", self.storage.describe(self.active))))?;
        self.metrics.syncs += 1;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        self.sync()?;
        self.writer = self.storage.create(self.next_seq)?;
        self.active = self.next_seq;
        self.active_len = 0;
        self.metrics.rotations += 1;
        Ok(())
    }

    /// Rewrites every segment without the records `drop` selects (a deleted user's
    /// events), each replaced atomically; the others keep their positions. Returns how
    /// many records were removed. Run it where appends run (it owns the active segment).
    ///
    /// # Errors
    /// A segment cannot be read or replaced; segments done before stay compacted.
    pub fn compact(&mut self, drop: impl Fn(&Record) -> bool) -> Result<u64> {
        self.sync()?;
        let mut removed = 0;
        for first in self.storage.list()? {
            let bytes = self.storage.read(first)?;
            let s = scan(&bytes);
            let before = s.records.len();
            let kept: Vec<&Record> = s.records.iter().filter(|r| !drop(r)).collect();
            if kept.len() == before {
                continue;
            }
            let mut out = Vec::with_capacity(bytes.len());
            for r in &kept {
                encode(r, &mut out)?;
            }
            self.storage.replace(first, &out)?;
            removed += (before - kept.len()) as u64;
            if first == self.active {
                self.active_len = out.len() as u64;
                self.writer = self.storage.append(first, self.active_len)?;
            }
        }
        Ok(removed)
    }

    /// Retention: removes sealed segments whose every record is at or before `position`
    /// (the newest model holds them) and that were last written before `older_than`.
    /// The active segment always stays. Returns how many segments were removed.
    ///
    /// # Errors
    /// A segment cannot be inspected or removed.
    pub fn prune(&mut self, position: u64, older_than: std::time::SystemTime) -> Result<usize> {
        let segments = self.storage.list()?;
        let mut removed = 0;
        for pair in segments.windows(2) {
            let (first, next) = (pair[0], pair[1]);
            // Records of a segment end before the next one's first.
            if first == self.active || next.saturating_sub(1) > position {
                continue;
            }
            if self.storage.modified(first)? < older_than {
                self.storage.remove(first)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Counters since open.
    pub fn metrics(&self) -> LogMetrics {
        self.metrics
    }

    /// Every record with sequence number `from` or later, in order (for replay).
    ///
    /// # Errors
    /// A segment cannot be read.
    pub fn read_from(&self, from: u64) -> Result<Vec<Record>> {
        read_records(self.storage.as_ref(), from)
    }
}

/// Every record with sequence number `from` or later in the log at `dir`, without
/// opening it for writing (the trainer reads a live server's log this way). A torn end
/// of the last segment (a record being written) is skipped; damage anywhere else is an
/// error, as when the log is opened, since acknowledged records would be lost.
///
/// # Errors
/// The directory or a segment cannot be read, or a sealed segment is damaged (or holds
/// a whole record this build cannot decode).
pub fn read_dir(dir: &Path, from: u64) -> Result<Vec<Record>> {
    read_records(&FsStorage::existing(dir), from)
}

fn read_records(storage: &dyn Storage, from: u64) -> Result<Vec<Record>> {
    let segments = storage.list()?;
    let mut out = Vec::new();
    for (n, &first) in segments.iter().enumerate() {
        // Skip segments that end before `from` (the next one starts at or before it).
        if segments.get(n + 1).is_some_and(|&next| next <= from) {
            continue;
        }
        let s = scan(&storage.read(first)?);
        if let Some(why) = s.damage {
            if n + 1 < segments.len() || s.whole {
                return Err(LogError::Corrupt { file: storage.describe(first), offset: s.valid_len, why });
            }
        }
        out.extend(s.records.into_iter().filter(|r| r.seq >= from));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
