//! The log on a real directory and on a disk that loses unsynced bytes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use affinity_core::data::{Event, EventKind};

use super::*;

fn ev(n: u64) -> Entry {
    Entry::Event(LoggedEvent {
        event: Event::new(format!("u{}", n % 7), format!("i{n}"), EventKind::View, Some(n as i64)),
        event_id: Some(format!("e{n}")),
        context: Context::default(),
    })
}

/// The segment files of a log directory, oldest first.
fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    out.sort();
    out
}

fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

#[test]
fn appended_and_synced_records_come_back_after_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = EventLog::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.append(&[ev(1), ev(2)]).unwrap(), 1..3);
    assert_eq!(log.append(&[ev(3)]).unwrap(), 3..4);
    log.sync().unwrap();
    assert_eq!(log.metrics().syncs, 1);
    drop(log);
    let log = EventLog::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.next_seq(), 4);
    let all = log.read_from(1).unwrap();
    assert_eq!(seqs(&all), vec![1, 2, 3]);
    assert_eq!(all[2].entry, ev(3));
    assert_eq!(seqs(&log.read_from(3).unwrap()), vec![3]);
    assert_eq!(seqs(&read_dir(dir.path(), 2).unwrap()), vec![2, 3]);
}

#[test]
fn catalogue_entries_come_back_beside_events() {
    let dir = tempfile::tempdir().unwrap();
    let item = Entry::Item(affinity_core::data::Item {
        title: "Steel rake".into(),
        category: "garden".into(),
        price: Some(12.5),
        tags: vec!["steel".into()],
        ..affinity_core::data::Item::bare("rake")
    });
    let off = Entry::Availability(AvailabilityChange { item_id: "rake".into(), available: false });
    let mut log = EventLog::open(dir.path(), LogOptions::default()).unwrap();
    log.append(&[ev(1), item.clone(), off.clone()]).unwrap();
    log.sync().unwrap();
    drop(log);
    let all = read_dir(dir.path(), 1).unwrap();
    assert_eq!(all.into_iter().map(|r| r.entry).collect::<Vec<_>>(), vec![ev(1), item, off]);
}

#[test]
fn catalogue_entries_apply_in_log_order() {
    use affinity_core::data::Item;
    let mut items = vec![Item::bare("a"), Item::bare("b")];
    let off = |id: &str| Entry::Availability(AvailabilityChange { item_id: id.into(), available: false });
    let entries = [
        off("c"), // not listed yet: added bare, off sale
        Entry::Item(Item { category: "toys".into(), ..Item::bare("b") }),
        Entry::Item(Item { category: "garden".into(), ..Item::bare("c") }),
        off("c"),
        ev(1),
        off("a"),
        Entry::Item(Item { category: "books".into(), ..Item::bare("a") }),
    ];
    assert_eq!(apply_to_catalogue(&mut items, &entries), 6);
    let got: Vec<(&str, &str, bool)> = items.iter().map(|i| (i.item_id.as_str(), i.category.as_str(), i.available)).collect();
    assert_eq!(got, vec![("a", "books", true), ("b", "toys", true), ("c", "garden", false)]);

    // Without a catalogue file an item taken off sale stays off; of a file's repeated
    // rows the first (the one training keeps) is changed.
    let mut items = Vec::new();
    apply_to_catalogue(&mut items, &[off("d")]);
    assert_eq!((items[0].item_id.as_str(), items[0].available), ("d", false));
    let mut items = vec![Item::bare("a"), Item { category: "second".into(), ..Item::bare("a") }];
    apply_to_catalogue(&mut items, &[off("a")]);
    assert_eq!((items[0].available, items[1].available), (false, true));
}

#[test]
fn segments_rotate_by_size_and_replay_crosses_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = EventLog::open(dir.path(), LogOptions { max_segment_bytes: 200 }).unwrap();
    for n in 1..=40 {
        log.append(&[ev(n)]).unwrap();
    }
    log.sync().unwrap();
    assert!(log.metrics().rotations >= 5, "{:?}", log.metrics());
    assert_eq!(segments(dir.path()).len() as u64, log.metrics().rotations + 1);
    drop(log);
    let mut log = EventLog::open(dir.path(), LogOptions { max_segment_bytes: 200 }).unwrap();
    assert_eq!(seqs(&log.read_from(1).unwrap()), (1..=40).collect::<Vec<_>>());
    assert_eq!(seqs(&log.read_from(33).unwrap()), (33..=40).collect::<Vec<_>>());
    assert_eq!(log.append(&[ev(41)]).unwrap(), 41..42);
}

#[test]
fn a_torn_tail_is_cut_off_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = EventLog::open(dir.path(), LogOptions::default()).unwrap();
    log.append(&[ev(1), ev(2), ev(3)]).unwrap();
    log.sync().unwrap();
    drop(log);
    let seg = segments(dir.path())[0].clone();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut the last record in the middle.
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 5).unwrap();
    let mut log = EventLog::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(seqs(&log.read_from(1).unwrap()), vec![1, 2]);
    assert!(log.metrics().truncated_bytes > 0);
    assert_eq!(log.append(&[ev(9)]).unwrap(), 3..4, "the cut record's number is given again: it was never acknowledged");
    log.sync().unwrap();
    assert_eq!(seqs(&log.read_from(1).unwrap()), vec![1, 2, 3]);
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = EventLog::open(dir.path(), LogOptions { max_segment_bytes: 100 }).unwrap();
    for n in 1..=10 {
        log.append(&[ev(n)]).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let segs = segments(dir.path());
    assert!(segs.len() >= 2);
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[HEADER + 3] ^= 0x40;
    std::fs::write(&segs[0], bytes).unwrap();
    let e = EventLog::open(dir.path(), LogOptions::default()).err().unwrap().to_string();
    assert!(e.contains(segs[0].file_name().unwrap().to_str().unwrap()) && e.contains("byte 0") && e.contains("checksum"), "{e}");
    // The trainer's read refuses it too, rather than train on a log missing acknowledged records.
    let e = read_dir(dir.path(), 1).err().unwrap().to_string();
    assert!(e.contains(segs[0].file_name().unwrap().to_str().unwrap()) && e.contains("checksum"), "{e}");
}

/// A disk whose files keep written bytes in a volatile buffer until synced; `cut` loses
/// every unsynced byte, as a power cut does.
/// Per segment, its bytes and how many of them are synced.
type Files = BTreeMap<u64, (Vec<u8>, usize)>;

#[derive(Clone, Default)]
struct PowerCutDisk {
    files: Arc<Mutex<Files>>,
}

impl PowerCutDisk {
    fn cut(&self) {
        for (bytes, synced) in self.files.lock().unwrap().values_mut() {
            bytes.truncate(*synced);
        }
    }
}

struct PowerCutWriter {
    disk: PowerCutDisk,
    first: u64,
}

impl SegmentWriter for PowerCutWriter {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.disk.files.lock().unwrap().entry(self.first).or_default().0.extend_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let mut files = self.disk.files.lock().unwrap();
        let f = files.entry(self.first).or_default();
        f.1 = f.0.len();
        Ok(())
    }
}

impl Storage for PowerCutDisk {
    fn list(&self) -> Result<Vec<u64>> {
        Ok(self.files.lock().unwrap().keys().copied().collect())
    }

    fn read(&self, first: u64) -> Result<Vec<u8>> {
        Ok(self.files.lock().unwrap().get(&first).map(|f| f.0.clone()).unwrap_or_default())
    }

    fn create(&mut self, first: u64) -> Result<Box<dyn SegmentWriter>> {
        self.files.lock().unwrap().entry(first).or_default();
        Ok(Box::new(PowerCutWriter { disk: self.clone(), first }))
    }

    fn append(&mut self, first: u64, len: u64) -> Result<Box<dyn SegmentWriter>> {
        let mut files = self.files.lock().unwrap();
        let f = files.entry(first).or_default();
        f.0.truncate(len as usize);
        f.1 = f.1.min(len as usize);
        drop(files);
        Ok(Box::new(PowerCutWriter { disk: self.clone(), first }))
    }

    fn describe(&self, first: u64) -> String {
        format!("memory:{first}")
    }

    fn replace(&mut self, first: u64, bytes: &[u8]) -> Result<()> {
        self.files.lock().unwrap().insert(first, (bytes.to_vec(), bytes.len()));
        Ok(())
    }

    fn modified(&self, _first: u64) -> Result<std::time::SystemTime> {
        Ok(std::time::UNIX_EPOCH)
    }

    fn remove(&mut self, first: u64) -> Result<()> {
        self.files.lock().unwrap().remove(&first);
        Ok(())
    }
}

#[test]
fn after_a_power_cut_every_synced_record_survives_and_nothing_else_is_needed() {
    let disk = PowerCutDisk::default();
    let options = LogOptions { max_segment_bytes: 300 };
    let mut log = EventLog::open_with(Box::new(disk.clone()), options).unwrap();
    let mut acknowledged = Vec::new();
    for round in 0..30u64 {
        let batch: Vec<Entry> = (0..3).map(|k| ev(round * 3 + k)).collect();
        let seqs = log.append(&batch).unwrap();
        // Every other round is synced (acknowledged); the others are still in flight.
        if round % 2 == 0 {
            log.sync().unwrap();
            acknowledged.extend(seqs);
        }
    }
    disk.cut();
    drop(log);
    let log = EventLog::open_with(Box::new(disk.clone()), options).unwrap();
    let kept: std::collections::HashSet<u64> = log.read_from(1).unwrap().iter().map(|r| r.seq).collect();
    for s in &acknowledged {
        assert!(kept.contains(s), "acknowledged record {s} lost");
    }
    assert!(log.metrics().syncs == 0 && acknowledged.len() == 45);
}

#[test]
fn one_writer_per_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path(), LogOptions::default()).unwrap();
    let e = EventLog::open(dir.path(), LogOptions::default()).err().unwrap().to_string();
    assert!(e.contains("another process writes this event log"), "{e}");
    drop(log);
    assert!(EventLog::open(dir.path(), LogOptions::default()).is_ok(), "the lock goes with the writer");
}

#[test]
fn compaction_removes_a_users_records_from_every_segment_and_keeps_positions() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = EventLog::open(dir.path(), LogOptions { max_segment_bytes: 300 }).unwrap();
    for n in 1..=30 {
        log.append(&[ev(n)]).unwrap();
    }
    log.sync().unwrap();
    // ev(n) belongs to user u{n % 7}: forget u3.
    let removed = log
        .compact(|r| matches!(&r.entry, Entry::Event(e) if e.event.user_id == "u3"))
        .unwrap();
    assert_eq!(removed, 4);
    assert_eq!(log.append(&[ev(32)]).unwrap(), 31..32, "numbering goes on");
    log.sync().unwrap();
    let left = log.read_from(1).unwrap();
    assert_eq!(left.len(), 27);
    assert!(left.iter().all(|r| !matches!(&r.entry, Entry::Event(e) if e.event.user_id == "u3")));
    assert_eq!(left.last().unwrap().seq, 31);
    drop(log);
    for seg in segments(dir.path()) {
        let bytes = std::fs::read(seg).unwrap();
        assert!(!bytes.windows(2).any(|w| w == b"u3"), "no byte of u3 left");
    }
    let log = EventLog::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.read_from(1).unwrap().len(), 27);
}

#[test]
fn deleted_users_are_kept_as_keyed_hashes_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = DeletedUsers::load(dir.path()).unwrap();
    assert!(!d.contains("alice"));
    d.add("alice").unwrap();
    let again = DeletedUsers::load(dir.path()).unwrap();
    assert!(again.contains("alice") && !again.contains("bob"));
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert!(!bytes.windows(5).any(|w| w == b"alice"));
    }
}

/// A disk that takes `room` more bytes, then fails every write as a full disk does.
#[derive(Clone)]
struct FullDisk {
    inner: PowerCutDisk,
    room: Arc<Mutex<usize>>,
}

struct FullWriter {
    inner: Box<dyn SegmentWriter>,
    room: Arc<Mutex<usize>>,
}

impl SegmentWriter for FullWriter {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut room = self.room.lock().unwrap();
        if buf.len() > *room {
            return Err(std::io::Error::other("No space left on device"));
        }
        *room -= buf.len();
        self.inner.write_all(buf)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync()
    }
}

impl Storage for FullDisk {
    fn list(&self) -> Result<Vec<u64>> {
        self.inner.list()
    }
    fn read(&self, first: u64) -> Result<Vec<u8>> {
        self.inner.read(first)
    }
    fn create(&mut self, first: u64) -> Result<Box<dyn SegmentWriter>> {
        Ok(Box::new(FullWriter { inner: self.inner.create(first)?, room: Arc::clone(&self.room) }))
    }
    fn append(&mut self, first: u64, len: u64) -> Result<Box<dyn SegmentWriter>> {
        Ok(Box::new(FullWriter { inner: self.inner.append(first, len)?, room: Arc::clone(&self.room) }))
    }
    fn describe(&self, first: u64) -> String {
        self.inner.describe(first)
    }
    fn replace(&mut self, first: u64, bytes: &[u8]) -> Result<()> {
        self.inner.replace(first, bytes)
    }
    fn modified(&self, first: u64) -> Result<std::time::SystemTime> {
        self.inner.modified(first)
    }
    fn remove(&mut self, first: u64) -> Result<()> {
        self.inner.remove(first)
    }
}

#[test]
fn a_full_disk_fails_the_append_and_keeps_everything_synced_before() {
    let disk = FullDisk { inner: PowerCutDisk::default(), room: Arc::new(Mutex::new(400)) };
    let mut log = EventLog::open_with(Box::new(disk.clone()), LogOptions::default()).unwrap();
    let mut synced = 0;
    let err = loop {
        match log.append(&[ev(synced + 1)]) {
            Ok(_) => {
                log.sync().unwrap();
                synced += 1;
            }
            Err(e) => break e.to_string(),
        }
    };
    assert!(err.contains("No space left"), "{err}");
    assert!(synced > 2);
    drop(log);
    *disk.room.lock().unwrap() = usize::MAX;
    let log = EventLog::open_with(Box::new(disk), LogOptions::default()).unwrap();
    assert_eq!(log.read_from(1).unwrap().len() as u64, synced, "every synced record is kept");
}

#[test]
fn retention_removes_only_old_sealed_segments_a_model_already_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = EventLog::open(dir.path(), LogOptions { max_segment_bytes: 200 }).unwrap();
    for n in 1..=40 {
        log.append(&[ev(n)]).unwrap();
    }
    log.sync().unwrap();
    let before = segments(dir.path()).len();
    let future = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    assert_eq!(log.prune(20, std::time::UNIX_EPOCH).unwrap(), 0, "nothing is old enough");
    let removed = log.prune(20, future).unwrap();
    assert!(removed > 0 && removed < before, "{removed} of {before}");
    let left = log.read_from(1).unwrap();
    assert!(left.first().unwrap().seq <= 21, "everything after the model's position is kept");
    assert_eq!(left.last().unwrap().seq, 40);
    let sealed = segments(dir.path()).len() - 1;
    assert_eq!(log.prune(u64::MAX, future).unwrap(), sealed, "all but the active one");
    assert_eq!(segments(dir.path()).len(), 1);
}

#[test]
fn item_entries_written_before_item_places_still_read() {
    use affinity_core::data::{GeoPoint, Item, ItemV1};
    // The entry enum as builds before item places had it: its third variant held the
    // older item layout.
    #[derive(serde::Serialize)]
    #[allow(dead_code)]
    enum OldEntry {
        Event(LoggedEvent),
        Availability(AvailabilityChange),
        Item(ItemV1),
    }
    let old = ItemV1 {
        item_id: "rake".into(),
        title: "Steel rake".into(),
        category: "garden".into(),
        brand: String::new(),
        price: Some(12.5),
        tags: vec!["steel".into()],
        available: true,
    };
    let bytes = bincode::serialize(&OldEntry::Item(old.clone())).unwrap();
    let back: Entry = bincode::deserialize(&bytes).unwrap();
    assert_eq!(back.catalogue_item(), Some(Item::from(old)));
    // The current layout keeps the place and listing time.
    let new = Item { location: Some(GeoPoint { lat: 1.5, lon: 2.5 }), listed_at: Some(9), ..Item::bare("hoe") };
    let back: Entry = bincode::deserialize(&bincode::serialize(&Entry::Item(new.clone())).unwrap()).unwrap();
    assert_eq!(back.catalogue_item(), Some(new));
}

#[test]
fn a_whole_record_this_build_cannot_decode_is_never_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = EventLog::open(dir.path(), LogOptions::default()).unwrap();
    log.append(&[ev(1), ev(2)]).unwrap();
    log.sync().unwrap();
    drop(log);
    // A record as a newer build might write it: a variant this build does not know,
    // framed and checksummed like any other.
    let payload = {
        let mut p = bincode::serialize(&3u64).unwrap();
        p.extend_from_slice(&99u32.to_le_bytes());
        p
    };
    let seg = segments(dir.path())[0].clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    std::fs::write(&seg, &bytes).unwrap();
    let e = EventLog::open(dir.path(), LogOptions::default()).err().expect("refused").to_string();
    assert!(e.contains("cannot decode") && e.contains("newer build"), "{e}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was cut");
}

#[test]
fn social_changes_replay_onto_the_edge_list_in_order() {
    use affinity_core::data::{SocialEdge, SocialKind};
    let edge = |a: &str, b: &str, kind| SocialEdge { user_id: a.into(), other_id: b.into(), kind, weight: 1.0 };
    let change = |e: SocialEdge, removed| Entry::Social(SocialChange { edge: e, removed });
    let mut edges = vec![edge("a", "b", SocialKind::Friend), edge("c", "d", SocialKind::Friend), edge("e", "f", SocialKind::Follow)];
    let changes = vec![
        // a unfollows b: b still counts a.
        change(edge("a", "b", SocialKind::Follow), true),
        // d ends the friendship with c (named the other way round).
        change(edge("d", "c", SocialKind::Friend), true),
        change(edge("g", "h", SocialKind::Follow), false),
        change(edge("e", "f", SocialKind::Follow), true),
        change(edge("e", "f", SocialKind::Follow), false),
    ];
    assert_eq!(apply_to_social(&mut edges, &changes), 5);
    assert_eq!(edges, vec![edge("b", "a", SocialKind::Follow), edge("g", "h", SocialKind::Follow), edge("e", "f", SocialKind::Follow)]);
    // As live: the latest weight stands, also when it is lower.
    let mut edges = vec![SocialEdge { weight: 3.0, ..edge("x", "y", SocialKind::Friend) }];
    let lower = change(SocialEdge { weight: 0.5, ..edge("y", "x", SocialKind::Friend) }, false);
    assert_eq!(apply_to_social(&mut edges, &[lower]), 1);
    assert_eq!(edges, vec![SocialEdge { weight: 0.5, ..edge("x", "y", SocialKind::Friend) }]);
    let entry = change(edge("g", "h", SocialKind::Follow), false);
    assert!(matches!(&entry, Entry::Social(c) if c.names("h") && !c.names("a")));
    assert_eq!(entry.into_event(), None);
}

#[test]
fn membership_changes_replay_onto_the_membership_list_in_order() {
    use affinity_core::data::Membership;
    let m = |u: &str, c: &str| Membership { user_id: u.into(), community_id: c.into() };
    let change = |x: Membership, removed| Entry::Membership(MembershipChange { membership: x, removed });
    let mut list = vec![m("a", "club"), m("b", "club")];
    let changes = vec![change(m("a", "club"), true), change(m("c", "club"), false), change(m("a", "runners"), false), change(m("c", "club"), true), change(m("c", "club"), false)];
    assert_eq!(apply_to_memberships(&mut list, &changes), 5);
    assert_eq!(list, vec![m("b", "club"), m("a", "runners"), m("c", "club")]);
    assert!(changes[1].names("c") && !changes[1].names("a"));
}
