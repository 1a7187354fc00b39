//! The ingest path: events are made durable in the event log, then applied to the live
//! state, and only then acknowledged.
//!
//! One writer thread owns the log. Handlers hand it batches over a channel and wait for
//! its answer; it takes every batch that is waiting, appends them all, syncs once (group
//! commit: under load one fsync covers many batches, without a timer adding latency when
//! idle) and answers each with its sequence numbers. If a write or sync fails, that round
//! is answered with the error and the log takes no more writes (UNAVAILABLE) until the
//! server restarts and re-opens it, which cuts off whatever was half written; reads keep
//! serving. Client retries carrying an `event_id` that was already stored are skipped.

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::path::Path;
use std::sync::{mpsc, Mutex};

use affinity_core::data::Event;
use affinity_eventlog::{Entry, EventLog, LogMetrics, LogOptions, LoggedEvent, MembershipChange, SocialChange};
use tokio::sync::oneshot;

/// Event ids remembered for de-duplication (the oldest are forgotten first).
const MAX_EVENT_IDS: usize = 1_000_000;

/// Where the writer answers a job.
type Reply<T> = oneshot::Sender<Result<T, String>>;

/// Work for the writer thread, which owns the log.
enum Job {
    /// Append and (with the rest of the round) sync.
    Append {
        entries: Vec<Entry>,
        reply: oneshot::Sender<Result<Range<u64>, String>>,
    },
    /// Rewrite the segments without one user's records.
    Forget {
        user_id: String,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Sync what is written (whatever the policy): the last job at shutdown.
    Flush { reply: oneshot::Sender<Result<(), String>> },
    /// Remove old segments a model already holds.
    Prune {
        position: u64,
        older_than: std::time::SystemTime,
        reply: oneshot::Sender<Result<usize, String>>,
    },
}

/// When the writer syncs the log, and so when a batch is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Sync as soon as a round of waiting batches is written (the default): under load
    /// one sync covers every batch that arrived during the previous one.
    #[default]
    EveryRound,
    /// Wait up to this long after a round's first batch for more before syncing: fewer
    /// syncs, each acknowledgement later by at most the window.
    Window(std::time::Duration),
    /// Never sync: acknowledged events survive a crash of the server but not of the
    /// machine (a power cut or kernel panic loses the unsynced tail). Warned at start.
    Off,
}

/// Why ingest refused a batch.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The log cannot take writes (failed earlier, or the writer is gone).
    #[error("the event log cannot take writes: {0}")]
    Unavailable(String),
}

/// Recently stored event ids.
#[derive(Default)]
struct SeenIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    /// Ids of batches being committed: a retry arriving meanwhile waits for them.
    pending: HashSet<String>,
}

impl SeenIds {
    fn insert(&mut self, id: &str) -> bool {
        if !self.set.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        if self.order.len() > MAX_EVENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// What a log holds for a starting server.
#[derive(Debug, Default)]
pub struct Replay {
    /// Events the loaded model was not trained on, with their log positions, oldest first.
    pub events: Vec<(u64, Event)>,
    /// Every catalogue change (availability, item entries), oldest first: the model's
    /// catalogue may predate any of them.
    pub catalogue: Vec<Entry>,
    /// Every social edge change with its log position, oldest first (a model trained
    /// from the log holds some; re-applying them is harmless).
    pub social: Vec<(u64, SocialChange)>,
    /// Every membership change with its log position, oldest first (likewise).
    pub memberships: Vec<(u64, MembershipChange)>,
}

/// The server's handle on its event log.
pub struct Ingest {
    jobs: Mutex<mpsc::Sender<Job>>,
    ids: Mutex<SeenIds>,
    metrics: std::sync::Arc<Mutex<LogMetrics>>,
    next: std::sync::atomic::AtomicU64,
}

impl Ingest {
    /// Opens the log in `dir` (created if needed) and starts its writer thread. Returns
    /// the handle and what to replay: the events after log position `after` (the model
    /// holds the ones up to it) and every catalogue change, in log order.
    ///
    /// # Errors
    /// The log cannot be opened (unwritable directory, damaged sealed segment).
    pub fn open(dir: &Path, after: u64, policy: SyncPolicy) -> Result<(Ingest, Replay), affinity_eventlog::LogError> {
        let mut log = EventLog::open(dir, LogOptions::default())?;
        let records = log.read_from(1)?;
        let mut ids = SeenIds::default();
        let mut replay = Replay::default();
        for r in records {
            match r.entry {
                Entry::Event(e) => {
                    if let Some(id) = &e.event_id {
                        ids.insert(id);
                    }
                    if r.seq > after {
                        replay.events.push((r.seq, e.event));
                    }
                }
                catalogue @ (Entry::Availability(_) | Entry::Item(_) | Entry::ItemV1(_)) => replay.catalogue.push(catalogue),
                Entry::Social(change) => replay.social.push((r.seq, change)),
                Entry::Membership(change) => replay.memberships.push((r.seq, change)),
            }
        }
        let next = std::sync::atomic::AtomicU64::new(log.next_seq());
        let (tx, rx) = mpsc::channel::<Job>();
        let metrics = std::sync::Arc::new(Mutex::new(log.metrics()));
        let shared = std::sync::Arc::clone(&metrics);
        std::thread::Builder::new()
            .name("event-log".into())
            .spawn(move || writer(&mut log, &rx, &shared, policy))
            .map_err(|e| affinity_eventlog::LogError::Io {
                what: "start the event log writer".into(),
                source: e,
            })?;
        Ok((
            Ingest {
                jobs: Mutex::new(tx),
                ids: Mutex::new(ids),
                metrics,
                next,
            },
            replay,
        ))
    }

    /// The position the next stored event will get.
    pub fn next_position(&self) -> u64 {
        self.next.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The log's counters (appends, syncs, …).
    pub fn metrics(&self) -> LogMetrics {
        *self.metrics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `events` durably, skipping those whose `event_id` was stored before.
    /// Returns the stored events (in order) with their sequence numbers, and the number
    /// of duplicates skipped.
    ///
    /// # Errors
    /// The log cannot take writes.
    pub async fn store(&self, events: Vec<LoggedEvent>) -> Result<(Vec<Event>, Range<u64>, usize), IngestError> {
        // A retry of a batch still being committed waits for it: counted a duplicate if the
        // first one is stored, stored itself if that one failed (never dropped). The check
        // and the reservation are one step under the lock.
        let (fresh, duplicates, reserved) = loop {
            {
                let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
                let waiting = !ids.pending.is_empty() && events.iter().any(|e| e.event_id.as_ref().is_some_and(|id| ids.pending.contains(id)));
                if !waiting {
                    break Self::reserve(&mut ids, events);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        };
        // Reserved while the batch commits; remembered only once stored, so a failed batch
        // can be retried (the guard frees the reservation whatever happens).
        let reservation = Reservation { ids: &self.ids, reserved };
        if fresh.is_empty() {
            return Ok((Vec::new(), 0..0, duplicates));
        }
        let seqs = self.commit(fresh.iter().cloned().map(Entry::Event).collect()).await?;
        reservation.stored();
        Ok((fresh.into_iter().map(|e| e.event).collect(), seqs, duplicates))
    }
}

/// Event ids of a batch being committed: freed when dropped, remembered as stored by
/// [`Reservation::stored`].
struct Reservation<'a> {
    ids: &'a Mutex<SeenIds>,
    reserved: Vec<String>,
}

impl Reservation<'_> {
    /// The batch is durable: its ids count as stored from now on.
    fn stored(mut self) {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        for id in std::mem::take(&mut self.reserved) {
            ids.pending.remove(&id);
            ids.insert(&id);
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.reserved.is_empty() {
            return;
        }
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        for id in &self.reserved {
            ids.pending.remove(id);
        }
    }
}

impl Ingest {
    /// Splits `events` into those to store (their ids reserved as pending) and a count
    /// of duplicates (ids stored before, or repeated within the batch).
    fn reserve(ids: &mut SeenIds, events: Vec<LoggedEvent>) -> (Vec<LoggedEvent>, usize, Vec<String>) {
        let mut reserved = Vec::new();
        let mut fresh = Vec::with_capacity(events.len());
        let mut dup = 0;
        for e in events {
            match &e.event_id {
                Some(id) if ids.set.contains(id) || !ids.pending.insert(id.clone()) => dup += 1,
                Some(id) => {
                    reserved.push(id.clone());
                    fresh.push(e);
                }
                None => fresh.push(e),
            }
        }
        (fresh, dup, reserved)
    }

    /// Hands the writer thread a job built around its reply channel and waits for the
    /// answer.
    async fn ask<T>(&self, job: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Job) -> Result<T, IngestError> {
        let stopped = || IngestError::Unavailable("the writer stopped".into());
        let (reply, answer) = oneshot::channel();
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).send(job(reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(IngestError::Unavailable)
    }

    /// Makes `entries` durable; returns their log positions.
    ///
    /// # Errors
    /// The log cannot take writes.
    pub async fn commit(&self, entries: Vec<Entry>) -> Result<Range<u64>, IngestError> {
        let seqs = self.ask(|reply| Job::Append { entries, reply }).await?;
        self.next.fetch_max(seqs.end, std::sync::atomic::Ordering::Relaxed);
        Ok(seqs)
    }

    /// Removes every record of `user_id` from the log's segments (each rewritten
    /// atomically); returns how many were removed.
    ///
    /// # Errors
    /// The log cannot take writes.
    pub async fn forget(&self, user_id: &str) -> Result<u64, IngestError> {
        let user_id = user_id.to_string();
        self.ask(|reply| Job::Forget { user_id, reply }).await
    }

    /// Retention: removes sealed segments at or before `position` (the live model holds
    /// them) last written before `older_than`; returns how many.
    ///
    /// # Errors
    /// The log cannot take writes, or a segment cannot be removed.
    pub async fn prune(&self, position: u64, older_than: std::time::SystemTime) -> Result<usize, IngestError> {
        self.ask(|reply| Job::Prune { position, older_than, reply }).await
    }

    /// Syncs everything written so far to disk, whatever the sync policy (at shutdown:
    /// with `SyncPolicy::Off`, this is what makes acknowledged events survive a power
    /// cut after a clean stop).
    ///
    /// # Errors
    /// The log cannot be synced.
    pub async fn flush(&self) -> Result<(), IngestError> {
        self.ask(|reply| Job::Flush { reply }).await
    }
}

/// The writer thread: every waiting batch, one sync, every answer; compactions and
/// retention between rounds.
fn writer(log: &mut EventLog, jobs: &mpsc::Receiver<Job>, metrics: &Mutex<LogMetrics>, policy: SyncPolicy) {
    let mut broken: Option<String> = None;
    while let Ok(first) = jobs.recv() {
        let mut waiting = vec![first];
        waiting.extend(jobs.try_iter());
        if let SyncPolicy::Window(window) = policy {
            let until = std::time::Instant::now() + window;
            while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
                match jobs.recv_timeout(left) {
                    Ok(job) => waiting.push(job),
                    Err(_) => break,
                }
            }
        }
        let mut round = Vec::new();
        let mut flushes = Vec::new();
        for job in waiting {
            match job {
                Job::Append { entries, reply } => round.push((entries, reply)),
                // After this round's appends (below): a flush covers what came before it.
                Job::Flush { reply } => flushes.push(reply),
                Job::Prune { position, older_than, reply } => {
                    let _ = reply.send(log.prune(position, older_than).map_err(|e| e.to_string()));
                }
                Job::Forget { user_id, reply } => {
                    let result = match &broken {
                        Some(why) => Err(why.clone()),
                        None => log
                            .compact(|r| r.entry.names(&user_id))
                            .map_err(|e| e.to_string()),
                    };
                    let _ = reply.send(result);
                }
            }
        }
        append_round(log, round, &mut broken, metrics, policy);
        for reply in flushes {
            let _ = reply.send(log.sync().map_err(|e| e.to_string()));
        }
    }
}

/// Appends one round of batches, syncs them (unless the policy is off) and answers each;
/// a failure answers the whole round with the error and stops the log taking writes.
fn append_round(
    log: &mut EventLog,
    round: Vec<(Vec<Entry>, Reply<Range<u64>>)>,
    broken: &mut Option<String>,
    metrics: &Mutex<LogMetrics>,
    policy: SyncPolicy,
) {
    if round.is_empty() {
        return;
    }
    if let Some(why) = broken.as_ref() {
        for (_, reply) in round {
            let _ = reply.send(Err(why.clone()));
        }
        return;
    }
    let mut results = Vec::with_capacity(round.len());
    let mut failed = None;
    for (entries, _) in &round {
        match log.append(entries) {
            Ok(r) => results.push(r),
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    if failed.is_none() && policy != SyncPolicy::Off {
        if let Err(e) = log.sync() {
            failed = Some(e.to_string());
        }
    }
    *metrics.lock().unwrap_or_else(|p| p.into_inner()) = log.metrics();
    match failed {
        None => {
            for ((_, reply), r) in round.into_iter().zip(results) {
                let _ = reply.send(Ok(r));
            }
        }
        Some(why) => {
            tracing::error!(cause = %why, "event log write failed; ingest is off until restart");
            for (_, reply) in round {
                let _ = reply.send(Err(why.clone()));
            }
            *broken = Some(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use affinity_core::data::EventKind;
    use affinity_eventlog::Context;

    use super::*;

    fn batch(n: usize) -> Vec<LoggedEvent> {
        vec![LoggedEvent {
            event: Event::new(format!("u{n}"), "i", EventKind::View, Some(1)),
            event_id: None,
            context: Context::default(),
        }]
    }

    #[tokio::test]
    async fn a_commit_window_syncs_many_batches_once_and_off_never_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let window = std::time::Duration::from_millis(50);
        let (log, _) = Ingest::open(dir.path(), 0, SyncPolicy::Window(window)).unwrap();
        let log = std::sync::Arc::new(log);
        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..20)
            .map(|n| {
                let log = std::sync::Arc::clone(&log);
                tokio::spawn(async move { log.store(batch(n)).await.map(|r| r.1) })
            })
            .collect();
        for c in calls {
            let seqs = c.await.unwrap().unwrap();
            assert_eq!(seqs.end - seqs.start, 1);
        }
        assert!(started.elapsed() >= window, "acknowledged only after the window");
        let syncs = log.metrics().syncs;
        assert!(syncs <= 2, "20 batches in one window, {syncs} syncs");

        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Ingest::open(dir.path(), 0, SyncPolicy::Off).unwrap();
        log.store(batch(1)).await.unwrap();
        assert_eq!(log.metrics().syncs, 0);
    }
}
