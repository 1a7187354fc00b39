//! The versioned, checksummed model directory: the only contract between the trainer
//! and the server.
//!
//! ```text
//! MODEL_ROOT/
//!   current                             # name of the live version (replaced atomically)
//!   20261123T180000.123456Z-1a2b3c4d/   # one version
//!     manifest.json                     # format version, counts, parameters, serving
//!                                       # settings, SHA-256 of every file
//!     items.bin users.bin popularity.bin neighbours.bin repeat.bin activity.bin
//!     collab_items.f32 collab_users.f32 content.f32
//!     collab_mips.graph.bin collab_cos.graph.bin content.graph.bin
//!     shortlists.bin social.bin         # optional: long histories' candidate lists,
//!                                       # the social graph (`crate::social`)
//!     influence.bin                     # optional: who moves their contacts (`crate::influence`)
//!     communities.bin                   # optional: users' communities (`crate::communities`)
//! ```
//!
//! A version is written to `MODEL_ROOT/.tmp-<version>/`, fsynced and renamed into place,
//! then `current` is replaced by rename, so a reader never sees a partial model. Loading
//! checks the format version and every checksum before decoding anything.
//!
//! Compatibility: a build reads formats 2 to its own; older and newer ones are refused
//! with a message saying what to do. Format 3 added `repeat.bin` (what the model learned
//! about returns, [`crate::repeat`]); a format-2 model loads with none learned, so it
//! excludes what users had, as it always did. Format 4 added `activity.bin` (each user's
//! activity summary, [`crate::activity`]); older models load with empty summaries.
//! Format 5 added each item's place and listing time to `items.bin` (older ones decode
//! the earlier item layout and load without places; listing times come from the next
//! training). Format 6 stores each HNSW graph as its links (`NAME.graph.bin`, searched
//! over the model's own matrices, see [`crate::ann`]) in place of hnsw_rs's dump
//! (`NAME.hnsw.{graph,data}`), which older models still load from, converted once.
//! Optional files need no new format: a model without `social.bin` has no social graph.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ndarray::Array2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::publish::{Retention, Staging};
use super::shortlist::Shortlists;
use super::{Indexes, Model, ModelParts, UserHistory};
use crate::als::CollabModel;
use crate::ann::AnnIndex;
use crate::data::{Item, ItemV1, TimeKind, User};
use crate::error::{Error, Result};
use crate::ids::IdMap;
use crate::neighbors::Neighbours;
use crate::params::{TrainParams, TuningReport};
use crate::activity::ActivityTable;
use crate::repeat::RepeatModel;
use crate::settings::ServingSettings;
use crate::communities::Communities;
use crate::influence::Influence;
use crate::social::SocialGraph;

/// The model format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 6;

/// The oldest model format this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 2;

/// Name of the pointer file in a model root.
pub const CURRENT: &str = "current";

/// Sizes recorded in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Users in the model: those in the users file and those seen in events.
    pub users: usize,
    /// Items in the model: catalogue entries and items seen only in events.
    pub items: usize,
    /// Events the model was trained on.
    pub events: usize,
    /// Items with at least one event (they have a collaborative embedding).
    pub items_with_events: usize,
    /// Items with at least one catalogue feature (they have a content embedding).
    pub items_with_content: usize,
}

/// Checksum and size of one model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// SHA-256 of the file's contents, lower-case hex.
    pub sha256: String,
    /// Size of the file in bytes; a mismatch on load means it was truncated or resized.
    pub bytes: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Format the directory was written in; checked before anything else is read.
    pub format_version: u32,
    /// Version name (see [`new_version_name`]), also the name of the version directory.
    pub version: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Sizes of the trained model.
    pub counts: Counts,
    /// How the training events' timestamps were interpreted.
    pub time_kind: TimeKind,
    /// Every parameter the model was trained with.
    pub params: TrainParams,
    /// The settings the server scores with unless configured otherwise (format 2; derived
    /// from `params` for format 1).
    #[serde(default)]
    pub serving: ServingSettings,
    /// What raw event weights were divided by in training (see
    /// [`crate::interactions::Interactions::weight_scale`]); 1 for format-1 models.
    #[serde(default = "unit_scale")]
    pub weight_scale: f32,
    /// How the parameters were chosen, when `train` searched for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<TuningReport>,
    /// How the serving `ef` was chosen from measured recall, when the model has indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_calibration: Option<super::calibrate::EfCalibration>,
    /// Seconds spent training (excluding writing).
    pub train_seconds: f64,
    /// The last event-log position the model was trained through (0: trained from files
    /// only); a server replays the log after it into its live state.
    #[serde(default)]
    pub log_position: u64,
    /// Every other file of the version by name, with its checksum and size.
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Serialize, Deserialize)]
struct UsersFile {
    ids: Vec<String>,
    attributes: Vec<User>,
    histories: Vec<UserHistory>,
}

/// Generates a version name `YYYYMMDDTHHMMSS.ffffffZ-<8 hex>`: UTC time to the
/// microsecond, so names sort by creation even within a second, and a random suffix, so
/// two trainers never pick the same name. Within one process each name is at least a
/// microsecond after the last, so names made back to back sort in the order made.
pub fn new_version_name() -> String {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    let now = chrono::Utc::now().timestamp_micros();
    let last = LAST.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(now.max(last.saturating_add(1)))).unwrap_or(now);
    let micros = now.max(last.saturating_add(1));
    let at = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_else(chrono::Utc::now);
    format!("{}-{:08x}", at.format("%Y%m%dT%H%M%S%.6fZ"), rand::random::<u32>())
}

/// Whether `name` looks like a version directory name: the current form
/// `YYYYMMDDTHHMMSS.ffffffZ-<8 hex>` or the older one without the fraction.
pub fn is_version_name(name: &str) -> bool {
    version_time(name).is_some()
}

/// A version name's creation time as `(YYYYMMDDHHMMSS, microseconds)`, for ordering
/// both name forms together.
fn version_time(name: &str) -> Option<(u64, u32)> {
    let (stamp, hex) = name.split_once("Z-")?;
    if hex.len() != 8 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_digit());
    let (secs, fraction) = match stamp.split_once('.') {
        Some((secs, f)) if digits(f, 6) => (secs, f.parse().ok()?),
        Some(_) => return None,
        None => (stamp, 0),
    };
    let (date, time) = secs.split_once('T')?;
    if !digits(date, 8) || !digits(time, 6) {
        return None;
    }
    Some((format!("{date}{time}").parse().ok()?, fraction))
}

/// Orders version names by creation time, then by name.
pub(crate) fn by_age(a: &String, b: &String) -> std::cmp::Ordering {
    version_time(a).cmp(&version_time(b)).then_with(|| a.cmp(b))
}

fn write_file(dir: &Path, name: &str, bytes: &[u8], files: &mut BTreeMap<String, FileEntry>) -> Result<()> {
    let path = dir.join(name);
    let mut f = File::create(&path).map_err(|e| Error::io(&path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&path, e))?;
    f.sync_all().map_err(|e| Error::io(&path, e))?;
    files.insert(
        name.to_string(),
        FileEntry {
            sha256: hex::encode(Sha256::digest(bytes)),
            bytes: bytes.len() as u64,
        },
    );
    Ok(())
}

fn f32_bytes(m: &Array2<f32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() * 4);
    for v in m.iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn encode<T: Serialize>(value: &T, name: &str) -> Result<Vec<u8>> {
    bincode::serialize(value).map_err(|e| Error::model(name, format!("cannot encode: {e}")))
}

/// Writes `model` as a new version under `root`, points `current` at it and prunes old
/// versions by `retention` (see [`super::publish`]: safe with other trainers publishing
/// into the same root and servers reading it). Returns the version directory.
pub fn save(model: &mut Model, root: &Path, retention: Retention) -> Result<PathBuf> {
    // Written in this build's format, whatever the model was read from; an older
    // model's graph over transformed vectors cannot be searched over its rows and is
    // built again.
    model.manifest.format_version = FORMAT_VERSION;
    if model.indexes.mips.as_ref().is_some_and(AnnIndex::holds_vectors) {
        model.build_indexes();
    }
    // The checks `load` makes of the optional tables, made before anything is written: a
    // version no server could load must never become `current`.
    let (n_users, n_items) = (model.n_users(), model.n_items());
    for (fits, name) in [
        (model.shortlists().fits(n_users, n_items), "shortlists.bin"),
        (model.social.fits(n_users), "social.bin"),
        (model.communities.fits(n_users), "communities.bin"),
        (model.influence.fits(n_users), "influence.bin"),
    ] {
        if !fits {
            return Err(Error::model(name, "does not match the user and item tables; the version was not written"));
        }
    }
    let version = model.manifest.version.clone();
    let staging = Staging::begin(root, &version)?;
    let tmp = staging.dir().to_path_buf();
    let mut files = BTreeMap::new();
    write_file(&tmp, "items.bin", &encode(&model.items, "items.bin")?, &mut files)?;
    let users = UsersFile {
        ids: model.users.ids().to_vec(),
        attributes: model.user_attributes.clone(),
        histories: model.histories.clone(),
    };
    write_file(&tmp, "users.bin", &encode(&users, "users.bin")?, &mut files)?;
    write_file(&tmp, "popularity.bin", &encode(&model.popularity, "popularity.bin")?, &mut files)?;
    write_file(&tmp, "neighbours.bin", &encode(&model.neighbours, "neighbours.bin")?, &mut files)?;
    write_file(&tmp, "repeat.bin", &encode(&model.repeat, "repeat.bin")?, &mut files)?;
    write_file(&tmp, "activity.bin", &encode(&model.activity, "activity.bin")?, &mut files)?;
    write_file(&tmp, "collab_items.f32", &f32_bytes(&model.collab.item_factors), &mut files)?;
    write_file(&tmp, "collab_users.f32", &f32_bytes(&model.user_factors), &mut files)?;
    write_file(&tmp, "content.f32", &f32_bytes(&model.content), &mut files)?;
    if !model.shortlists().is_empty() {
        write_file(&tmp, "shortlists.bin", &encode(model.shortlists(), "shortlists.bin")?, &mut files)?;
    }
    if !model.social.is_empty() {
        write_file(&tmp, "social.bin", &encode(&model.social, "social.bin")?, &mut files)?;
    }
    if !model.communities.is_empty() {
        write_file(&tmp, "communities.bin", &encode(&model.communities, "communities.bin")?, &mut files)?;
    }
    if !model.influence.is_empty() {
        write_file(&tmp, "influence.bin", &encode(&model.influence, "influence.bin")?, &mut files)?;
    }
    for (name, index) in [
        ("collab_mips", &model.indexes.mips),
        ("collab_cos", &model.indexes.collab),
        ("content", &model.indexes.content),
    ] {
        if let Some(index) = index {
            let file = format!("{name}.graph.bin");
            let bytes = index.encode().map_err(|e| Error::model(tmp.join(&file), format!("cannot encode: {e}")))?;
            write_file(&tmp, &file, &bytes, &mut files)?;
        }
    }
    model.manifest.files = files;
    let manifest = serde_json::to_vec_pretty(&model.manifest)
        .map_err(|e| Error::model("manifest.json", format!("cannot encode: {e}")))?;
    let mut unused = BTreeMap::new();
    write_file(&tmp, "manifest.json", &manifest, &mut unused)?;
    staging.publish(retention)
}

/// Resolves `--model`: a version directory (has `manifest.json`) or a model root (has
/// `current`).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    // A path that cannot be listed says why (missing, not a directory, permission
    // denied) rather than "no model here".
    fs::read_dir(path).map_err(|e| Error::model(path, format!("cannot read the model directory: {e}")))?;
    if is_file(&path.join("manifest.json"))? {
        return Ok(path.to_path_buf());
    }
    let pointer = path.join(CURRENT);
    if is_file(&pointer)? {
        let name = fs::read_to_string(&pointer).map_err(|e| Error::io(&pointer, e))?;
        let name = name.trim();
        if !is_version_name(name) {
            return Err(Error::model(&pointer, format!("does not name a model version: {name:?}")));
        }
        let dir = path.join(name);
        if !dir.join("manifest.json").is_file() {
            return Err(Error::model(
                dir.join("manifest.json"),
                format!("missing (the version named by {} is incomplete or gone)", pointer.display()),
            ));
        }
        return Ok(dir);
    }
    Err(Error::model(
        path,
        "no model here: expected a version directory with manifest.json or a model root with `current`",
    ))
}

/// Whether `path` is a file; an error other than "not there" (permission denied) is
/// reported, not taken for absence.
fn is_file(path: &Path) -> Result<bool> {
    match fs::metadata(path) {
        Ok(m) => Ok(m.is_file()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::model(path, format!("cannot read: {e}"))),
    }
}

/// A verified file's contents, as the loader needs them.
enum Blob {
    /// Bytes to decode (`.bin` tables).
    Bytes(Vec<u8>),
    /// Little-endian floats read straight into the matrix's buffer (`.f32`): no second
    /// copy of the largest files while loading.
    Floats(Vec<f32>),
    /// Only checked: hnsw_rs reads the HNSW dumps itself.
    Checked,
}

/// Reads `name` in full, checking its size and SHA-256 against the manifest, into the
/// form the loader decodes it from.
fn read_verified(dir: &Path, name: &str, manifest: &Manifest) -> Result<Blob> {
    let path = dir.join(name);
    let entry = manifest
        .files
        .get(name)
        .ok_or_else(|| Error::model(&path, "not listed in manifest.json"))?;
    let cannot = |e: std::io::Error| Error::model(&path, format!("cannot read: {e}"));
    let mut file = File::open(&path).map_err(cannot)?;
    let len = usize::try_from(entry.bytes).map_err(|_| Error::model(&path, "too large for this machine"))?;
    let no_memory = |e: std::collections::TryReserveError| Error::model(&path, format!("cannot read: {e}"));
    let mut hasher = Sha256::new();
    let (blob, read) = if name.contains(".hnsw.") {
        (Blob::Checked, stream_into(&mut file, &mut [], &mut hasher).map_err(cannot)?)
    } else if name.ends_with(".f32") && len % 4 == 0 {
        let mut floats: Vec<f32> = Vec::new();
        floats.try_reserve_exact(len / 4).map_err(no_memory)?;
        floats.resize(len / 4, 0.0);
        let read = stream_into(&mut file, bytemuck::cast_slice_mut(&mut floats), &mut hasher).map_err(cannot)?;
        // The files are little-endian.
        #[cfg(target_endian = "big")]
        for x in floats.iter_mut() {
            *x = f32::from_bits(x.to_bits().swap_bytes());
        }
        (Blob::Floats(floats), read)
    } else {
        let mut bytes: Vec<u8> = Vec::new();
        bytes.try_reserve_exact(len).map_err(no_memory)?;
        bytes.resize(len, 0);
        let read = stream_into(&mut file, &mut bytes, &mut hasher).map_err(cannot)?;
        (Blob::Bytes(bytes), read)
    };
    if read != entry.bytes {
        return Err(Error::model(&path, format!("truncated or resized: {read} bytes, manifest says {}", entry.bytes)));
    }
    if hex::encode(hasher.finalize()) != entry.sha256 {
        return Err(Error::model(&path, "checksum mismatch (file is corrupt or was modified)"));
    }
    Ok(blob)
}

/// Reads `file` to its end, filling `dst` first and hashing everything read; returns how
/// many bytes the file held (more than `dst` when it grew, fewer when it shrank).
fn stream_into(file: &mut File, dst: &mut [u8], hasher: &mut Sha256) -> std::io::Result<u64> {
    let mut filled = 0;
    while filled < dst.len() {
        match file.read(&mut dst[filled..]) {
            Ok(0) => return Ok(filled as u64),
            Ok(n) => {
                hasher.update(&dst[filled..filled + n]);
                filled += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut rest = vec![0u8; 1 << 20];
    let mut extra = 0u64;
    loop {
        match file.read(&mut rest) {
            Ok(0) => return Ok(filled as u64 + extra),
            Ok(n) => {
                hasher.update(&rest[..n]);
                extra += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(dir: &Path, name: &str, bytes: &[u8]) -> Result<T> {
    bincode::deserialize(bytes).map_err(|e| Error::model(dir.join(name), format!("cannot decode: {e}")))
}

/// Decodes the optional file `name` if the model has it (else an empty table), checking
/// that it `fits` the model's tables (`what` names them in the error).
fn optional<T: serde::de::DeserializeOwned + Default>(
    dir: &Path,
    blobs: &HashMap<String, Vec<u8>>,
    name: &str,
    fits: impl Fn(&T) -> bool,
    what: &str,
) -> Result<T> {
    let Some(bytes) = blobs.get(name) else { return Ok(T::default()) };
    let table: T = decode(dir, name, bytes)?;
    if !fits(&table) {
        return Err(Error::model(dir.join(name), format!("does not match {what}")));
    }
    Ok(table)
}

fn matrix(dir: &Path, name: &str, floats: Option<Vec<f32>>, rows: usize, cols: usize) -> Result<Array2<f32>> {
    let floats = floats.ok_or_else(|| Error::model(dir.join(name), "missing from manifest.json, or not whole f32 values"))?;
    if floats.len() != rows * cols {
        return Err(Error::model(
            dir.join(name),
            format!("holds {} bytes, expected {rows} × {cols} f32", floats.len() * 4),
        ));
    }
    Array2::from_shape_vec((rows, cols), floats).map_err(|e| Error::model(dir.join(name), e.to_string()))
}

fn unit_scale() -> f32 {
    1.0
}

/// Reads and checks `manifest.json` of a version directory.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = fs::read(&path).map_err(|e| Error::model(&path, format!("cannot read: {e}")))?;
    let probe: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| Error::model(&path, format!("not valid JSON: {e}")))?;
    match probe.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v > FORMAT_VERSION as u64 => {
            return Err(Error::model(
                &path,
                format!("format version {v} is newer than this build reads ({OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}); upgrade the server"),
            ))
        }
        Some(v) if v < OLDEST_FORMAT_VERSION as u64 => {
            return Err(Error::model(
                &path,
                format!("format version {v} is older than this build reads ({OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}); retrain the model with this trainer"),
            ))
        }
        Some(_) => {}
        None => return Err(Error::model(&path, "has no format_version")),
    }
    serde_json::from_value(probe).map_err(|e| Error::model(&path, format!("invalid manifest: {e}")))
}

/// Loads and verifies a model from a version directory or model root.
pub fn load(path: &Path) -> Result<Model> {
    let dir = resolve(path)?;
    let manifest = read_manifest(&dir)?;
    // Verify every listed file before decoding anything, in parallel; the HNSW dumps are
    // only checked (hnsw_rs reads them itself), the rest kept for decoding.
    if let Some(name) = manifest.files.keys().find(|name| name.contains('/') || name.contains("..")) {
        return Err(Error::model(dir.join("manifest.json"), format!("lists an invalid file name {name:?}")));
    }
    let read: Vec<(String, Blob)> = manifest
        .files
        .keys()
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|name| Ok((name.clone(), read_verified(&dir, name, &manifest)?)))
        .collect::<Result<_>>()?;
    let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
    let mut floats: HashMap<String, Vec<f32>> = HashMap::new();
    for (name, blob) in read {
        match blob {
            Blob::Bytes(b) => {
                blobs.insert(name, b);
            }
            Blob::Floats(f) => {
                floats.insert(name, f);
            }
            Blob::Checked => {}
        }
    }
    let started = std::time::Instant::now();
    tracing::debug!(dir = %dir.display(), "model files verified");
    let take = |name: &str| -> Result<&Vec<u8>> {
        blobs
            .get(name)
            .ok_or_else(|| Error::model(dir.join(name), "missing from manifest.json"))
    };
    // The tables are independent: they decode in parallel (a million-item model's take
    // seconds each).
    let version = manifest.format_version;
    let ((items, users_file), ((popularity, neighbours), (repeat, activity))) = rayon::join(
        || {
            rayon::join(
                || -> Result<Vec<Item>> {
                    if version >= 5 {
                        decode(&dir, "items.bin", take("items.bin")?)
                    } else {
                        Ok(decode::<Vec<ItemV1>>(&dir, "items.bin", take("items.bin")?)?.into_iter().map(Item::from).collect())
                    }
                },
                || decode::<UsersFile>(&dir, "users.bin", take("users.bin")?),
            )
        },
        || {
            rayon::join(
                || rayon::join(|| decode::<Vec<f32>>(&dir, "popularity.bin", take("popularity.bin")?), || decode::<Neighbours>(&dir, "neighbours.bin", take("neighbours.bin")?)),
                || {
                    rayon::join(
                        // Format 2 learned nothing about returns: its models exclude what
                        // users had.
                        || if version >= 3 { decode::<RepeatModel>(&dir, "repeat.bin", take("repeat.bin")?) } else { Ok(RepeatModel::default()) },
                        // Formats before 4 kept no activity summaries: their profiles have
                        // counts only from live events (filled in below).
                        || if version >= 4 { decode::<ActivityTable>(&dir, "activity.bin", take("activity.bin")?).map(Some) } else { Ok(None) },
                    )
                },
            )
        },
    );
    let (items, users_file, popularity, neighbours, repeat) = (items?, users_file?, popularity?, neighbours?, repeat?);
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "model tables decoded");
    let n_items = items.len();
    let n_users = users_file.ids.len();
    if repeat.is_active()
        && (repeat.item_group.len() != n_items
            || repeat.item_factor.len() != n_items
            || repeat.user_factor.len() != n_users
            || repeat.item_group.iter().any(|&g| g as usize >= repeat.hazard.len())
            || repeat.hazard.iter().any(|h| h.len() != crate::repeat::GAPS))
    {
        return Err(Error::model(dir.join("repeat.bin"), "does not match the item and user tables"));
    }
    let activity = activity?.unwrap_or_else(|| ActivityTable { users: vec![Default::default(); n_users], now: None, recent: Vec::new() });
    if activity.users.len() != n_users || activity.recent.iter().any(|r| r.user as usize >= n_users || r.item as usize >= n_items) {
        return Err(Error::model(dir.join("activity.bin"), "length differs from the user count"));
    }
    if users_file.histories.len() != n_users || users_file.attributes.len() != n_users {
        return Err(Error::model(dir.join("users.bin"), "user tables have different lengths"));
    }
    if popularity.len() != n_items {
        return Err(Error::model(dir.join("popularity.bin"), "length differs from the item count"));
    }
    if neighbours.len() != n_items || neighbours.iter().flatten().any(|&(j, _)| j as usize >= n_items) {
        return Err(Error::model(dir.join("neighbours.bin"), "does not match the item table"));
    }
    if let Some(bad) = users_file
        .histories
        .iter()
        .flat_map(|h| h.seen.iter().map(|s| s.0).chain(h.recent.iter().map(|r| r.item.0)))
        .find(|&i| i as usize >= n_items)
    {
        return Err(Error::model(dir.join("users.bin"), format!("refers to item index {bad} of {n_items}")));
    }
    let params = manifest.params;
    let d = params.als.factors;
    let (item_factors, user_factors, content) = (
        matrix(&dir, "collab_items.f32", floats.remove("collab_items.f32"), n_items, d)?,
        matrix(&dir, "collab_users.f32", floats.remove("collab_users.f32"), n_users, d)?,
        matrix(&dir, "content.f32", floats.remove("content.f32"), n_items, params.content.dim)?,
    );
    // Optional files: a model trained without their input (or before they existed) has
    // none, and loads with an empty table.
    let shortlists: Shortlists = optional(&dir, &blobs, "shortlists.bin", |t: &Shortlists| t.fits(n_users, n_items), "the user and item tables")?;
    let social: SocialGraph = optional(&dir, &blobs, "social.bin", |t: &SocialGraph| t.fits(n_users), "the user table")?;
    let communities: Communities = optional(&dir, &blobs, "communities.bin", |t: &Communities| t.fits(n_users), "the user table")?;
    let influence: Influence = optional(&dir, &blobs, "influence.bin", |t: &Influence| t.fits(n_users), "the user table")?;
    // The graphs' tables outlive the others (decoded last); the rest go now.
    let graph_tables: HashMap<String, Vec<u8>> = blobs.into_iter().filter(|(name, _)| name.ends_with(".graph.bin")).collect();
    let users = IdMap::from_ids(users_file.ids);
    let parts = ModelParts {
        collab: CollabModel::from_factors(item_factors, params.als),
        manifest,
        items,
        users,
        user_attributes: users_file.attributes,
        histories: users_file.histories,
        popularity,
        user_factors,
        content,
        neighbours,
        repeat,
        activity,
    };
    let mut model = Model::from_parts(parts);
    model.shortlists = shortlists;
    model.social = social;
    model.influence = influence;
    model.set_communities(communities);
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "model matrices decoded and derived");
    // Indexes are read only where the recorded settings score through them (smaller
    // catalogues are published without; older models that carry them do not need them).
    if !model.default_settings().scores_exactly(n_items) {
        let count = |has: &[bool]| has.iter().filter(|&&h| h).count();
        let load_index = |name: &str, len: usize, dims: &[usize]| -> Result<Option<AnnIndex>> {
            if len == 0 {
                return Ok(None);
            }
            // Format 6 on: the graph's links, one table searched over the model's rows.
            let table = format!("{name}.graph.bin");
            if let Some(bytes) = graph_tables.get(&table) {
                return AnnIndex::decode(bytes, len, dims[0], n_items).map(Some).map_err(|e| Error::model(dir.join(&table), e));
            }
            // Before: hnsw_rs's dump, read once and converted.
            for ext in ["hnsw.graph", "hnsw.data"] {
                if !model.manifest.files.contains_key(&format!("{name}.{ext}")) {
                    return Err(Error::model(dir.join(format!("{name}.{ext}")), "missing from manifest.json"));
                }
            }
            AnnIndex::load_dump(&dir, name, len, dims, n_items).map(Some)
        };
        // The three graphs load in parallel (an older model's hnsw_rs dumps take seconds each).
        let (collab_n, content_n) = (count(&model.has_collab), count(&model.has_content));
        let (mips, (collab, content)) = rayon::join(
            // Models before the inner-product graph hold transformed vectors, one longer
            // (see `ann::ip_query`).
            || load_index("collab_mips", collab_n, &[d, d + 1]),
            || {
                rayon::join(
                    || load_index("collab_cos", collab_n, &[d]),
                    || load_index("content", content_n, &[params.content.dim]),
                )
            },
        );
        let indexes = Indexes {
            mips: mips?,
            collab: collab?,
            content: content?,
        };
        model.indexes = indexes;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "HNSW graphs loaded");
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;
    use crate::data::{Dataset, Event, EventKind};
    use crate::recommend::{RecommendQuery, SimilarMode, SimilarQuery};
    use crate::testing::{fast_params, small_model};
    use crate::train::{train, NoProgress};

    /// Every user's top 10 and every item's top 5 similar (blend), as ids and scores.
    fn answers(m: &Model) -> Vec<(String, Vec<(String, f32)>)> {
        let s = m.default_settings();
        let list = |items: Vec<crate::recommend::Scored>| items.into_iter().map(|x| (m.item_id(x.item).to_string(), x.score)).collect();
        let mut out = Vec::new();
        for user in m.user_ids() {
            let r = m.recommend(&RecommendQuery::for_user(user.clone(), 10), &s).unwrap();
            out.push((user.clone(), list(r.items)));
        }
        for item in m.items() {
            let q = SimilarQuery {
                item_id: item.item_id.clone(),
                k: 5,
                mode: SimilarMode::Blend,
                rules: Default::default(),
            };
            out.push((item.item_id.clone(), m.similar_items(&q, &s).map(list).unwrap_or_default()));
        }
        out
    }

    fn saved(params: &TrainParams) -> (tempfile::TempDir, PathBuf, Model) {
        let root = tempfile::tempdir().unwrap();
        let mut m = small_model(params);
        let dir = save(&mut m, root.path(), Retention::default()).unwrap();
        (root, dir, m)
    }

    #[test]
    fn round_trip_gives_the_same_answers() {
        let (root, dir, m) = saved(&fast_params());
        assert_eq!(resolve(root.path()).unwrap(), dir);
        let back = load(root.path()).unwrap();
        assert_eq!(back.manifest().counts, m.manifest().counts);
        assert_eq!(back.default_settings(), m.default_settings());
        assert!(!back.has_indexes(), "a small catalogue is published without indexes");
        assert_eq!(answers(&back), answers(&m));
        // A version directory loads as well as its root.
        assert_eq!(load(&dir).unwrap().version(), m.version());
    }

    #[test]
    fn a_model_no_server_could_load_is_not_written() {
        let (root, dir, mut m) = saved(&fast_params());
        // An influence table for one user more than the model has (as non-finite weights
        // once made): refused before anything is written, `current` unchanged.
        let n = m.n_users() + 1;
        let ids = crate::ids::IdMap::from_ids((0..n).map(|u| format!("u{u}")).collect());
        let follow = crate::data::SocialEdge { user_id: "u0".into(), other_id: "u1".into(), kind: crate::data::SocialKind::Follow, weight: 1.0 };
        let (graph, _) = crate::social::SocialGraph::build(&[follow], &ids);
        m.influence = crate::influence::Influence::compute(&graph, n, &vec![Vec::new(); n], |_| "");
        assert!(!m.influence.is_empty());
        m.manifest.version.push_str("-bad");
        let e = save(&mut m, root.path(), Retention::default()).unwrap_err().to_string();
        assert!(e.contains("influence.bin") && e.contains("not written"), "{e}");
        assert_eq!(resolve(root.path()).unwrap(), dir);
        let names: Vec<String> = fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| !n.contains("-bad")), "nothing of the refused version: {names:?}");
    }

    #[test]
    fn ann_models_round_trip_with_their_indexes() {
        let mut p = fast_params();
        p.exact_max_items = 0;
        let (root, _dir, m) = saved(&p);
        assert!(m.has_indexes());
        let back = load(root.path()).unwrap();
        assert!(back.has_indexes());
        assert!(back.manifest().files.keys().any(|f| f.ends_with(".graph.bin")));
        assert_eq!(answers(&back), answers(&m));
    }

    #[test]
    fn models_with_hnsw_rs_dumps_still_load() {
        // A format-5 model: each graph an hnsw_rs dump of the same points.
        let mut p = fast_params();
        p.exact_max_items = 0;
        let (root, dir, m) = saved(&p);
        let hp = m.manifest().params.hnsw;
        let d = m.collab.item_factors.ncols();
        let graphs = [
            ("collab_mips", Model::index_points(&m.has_collab, &m.collab.item_factors, |y| crate::ann::ip_item(y, m.max_norm))),
            ("collab_cos", Model::index_points(&m.has_collab, &m.collab_unit, <[f32]>::to_vec)),
            ("content", Model::index_points(&m.has_content, &m.content, <[f32]>::to_vec)),
        ];
        edit_manifest(&dir, |v| {
            v["format_version"] = 5.into();
            for (name, points) in &graphs {
                let files = v["files"].as_object_mut().unwrap();
                files.remove(&format!("{name}.graph.bin"));
                fs::remove_file(dir.join(format!("{name}.graph.bin"))).unwrap();
                AnnIndex::dump_legacy(points, hp, &dir, name).unwrap();
                for ext in ["hnsw.graph", "hnsw.data"] {
                    let bytes = fs::read(dir.join(format!("{name}.{ext}"))).unwrap();
                    files.insert(format!("{name}.{ext}"), serde_json::json!({"sha256": hex::encode(Sha256::digest(&bytes)), "bytes": bytes.len()}));
                }
            }
        });
        let back = load(root.path()).unwrap();
        assert!(back.has_indexes());
        assert_eq!(back.indexes().mips.as_ref().map(|i| (i.len(), i.dim())), Some((graphs[0].1.len(), d)));
        // Its answers come through its own graphs: full lists, nearly the same items.
        let (ours, theirs) = (answers(&m), answers(&back));
        let same = ours.iter().zip(&theirs).flat_map(|(a, b)| a.1.iter().filter(|x| b.1.iter().any(|y| y.0 == x.0))).count();
        let all: usize = ours.iter().map(|a| a.1.len()).sum();
        assert_eq!(all, theirs.iter().map(|a| a.1.len()).sum::<usize>());
        assert!(same as f64 >= 0.9 * all as f64, "{same} of {all}");
        // Published again, it is a format-6 model with link tables.
        let mut back = back;
        let again = tempfile::tempdir().unwrap();
        save(&mut back, again.path(), Retention::default()).unwrap();
        let newer = load(again.path()).unwrap();
        assert_eq!(newer.manifest().format_version, FORMAT_VERSION);
        assert!(newer.manifest().files.contains_key("collab_mips.graph.bin"));
        assert_eq!(answers(&newer), theirs);
    }

    /// Saves a model, applies `damage` to its version directory, and returns the load error.
    fn load_error(damage: impl FnOnce(&Path, &Path)) -> String {
        let (root, dir, _) = saved(&fast_params());
        damage(root.path(), &dir);
        match load(root.path()) {
            Ok(_) => panic!("a damaged model loaded"),
            Err(e) => e.to_string(),
        }
    }

    fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = dir.join("manifest.json");
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        edit(&mut v);
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    #[test]
    fn every_kind_of_damage_is_refused_naming_the_file() {
        let e = load_error(|_, d| fs::remove_file(d.join("items.bin")).unwrap());
        assert!(e.contains("items.bin") && e.contains("cannot read"), "{e}");
        let e = load_error(|_, d| {
            let f = d.join("collab_items.f32");
            let bytes = fs::read(&f).unwrap();
            fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
        });
        assert!(e.contains("collab_items.f32") && e.contains("truncated"), "{e}");
        let e = load_error(|_, d| {
            let f = d.join("content.f32");
            let mut bytes = fs::read(&f).unwrap();
            bytes.extend_from_slice(&[0; 8]);
            fs::write(&f, bytes).unwrap();
        });
        assert!(e.contains("content.f32") && e.contains("resized"), "{e}");
        // Whole and checksummed, but not the shape the tables say (a quarter more floats).
        let e = load_error(|_, d| {
            let f = d.join("collab_items.f32");
            let mut bytes = fs::read(&f).unwrap();
            let row = bytes[..bytes.len() / 4].to_vec();
            bytes.extend_from_slice(&row[..row.len() - row.len() % 4]);
            let (sha, len) = (hex::encode(Sha256::digest(&bytes)), bytes.len());
            fs::write(&f, bytes).unwrap();
            edit_manifest(d, |v| v["files"]["collab_items.f32"] = serde_json::json!({ "sha256": sha, "bytes": len }));
        });
        assert!(e.contains("collab_items.f32") && e.contains("expected"), "{e}");
        let e = load_error(|_, d| {
            let f = d.join("users.bin");
            let mut bytes = fs::read(&f).unwrap();
            bytes[10] ^= 0xff;
            fs::write(&f, bytes).unwrap();
        });
        assert!(e.contains("users.bin") && e.contains("checksum"), "{e}");
        let e = load_error(|_, d| fs::write(d.join("manifest.json"), b"{ not json").unwrap());
        assert!(e.contains("manifest.json") && e.contains("not valid JSON"), "{e}");
        let e = load_error(|_, d| edit_manifest(d, |v| v["format_version"] = 99.into()));
        assert!(e.contains("newer") && e.contains("upgrade"), "{e}");
        let e = load_error(|_, d| edit_manifest(d, |v| v["format_version"] = 0.into()));
        assert!(e.contains("older") && e.contains("retrain"), "{e}");
        let e = load_error(|_, d| edit_manifest(d, |v| v["files"]["../escape"] = v["files"]["items.bin"].clone()));
        assert!(e.contains("invalid file name"), "{e}");
        let e = load_error(|_, d| fs::remove_dir_all(d).unwrap());
        assert!(e.contains("manifest.json") && e.contains("incomplete or gone"), "{e}");
        let e = load_error(|r, _| fs::write(r.join(CURRENT), "not-a-version\n").unwrap());
        assert!(e.contains("does not name a model version"), "{e}");
        let e = load_error(|r, _| fs::remove_file(r.join(CURRENT)).unwrap());
        assert!(e.contains("no model here"), "{e}");
        // A root that cannot be listed says why instead of "no model here".
        let missing = load(Path::new("/nonexistent/affinity/models")).err().unwrap().to_string();
        assert!(missing.contains("cannot read the model directory") && missing.contains("No such file"), "{missing}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let not_dir = load(file.path()).err().unwrap().to_string();
        assert!(not_dir.contains("cannot read the model directory") && !not_dir.contains("no model here"), "{not_dir}");
    }

    #[test]
    fn format_2_models_still_load_and_exclude_what_users_had() {
        let (root, dir, m) = saved(&fast_params());
        edit_manifest(&dir, |v| {
            v["format_version"] = 2.into();
            v["files"].as_object_mut().unwrap().remove("repeat.bin");
            v["files"].as_object_mut().unwrap().remove("activity.bin");
        });
        fs::remove_file(dir.join("repeat.bin")).unwrap();
        fs::remove_file(dir.join("activity.bin")).unwrap();
        // Items in the layout before places and listing times.
        let items: Vec<Item> = bincode::deserialize(&fs::read(dir.join("items.bin")).unwrap()).unwrap();
        let old: Vec<ItemV1> = items
            .iter()
            .map(|i| ItemV1 {
                item_id: i.item_id.clone(),
                title: i.title.clone(),
                category: i.category.clone(),
                brand: i.brand.clone(),
                price: i.price,
                tags: i.tags.clone(),
                available: i.available,
            })
            .collect();
        let bytes = bincode::serialize(&old).unwrap();
        fs::write(dir.join("items.bin"), &bytes).unwrap();
        edit_manifest(&dir, |v| {
            v["files"]["items.bin"] = serde_json::json!({ "sha256": hex::encode(Sha256::digest(&bytes)), "bytes": bytes.len() });
        });
        let back = load(root.path()).unwrap();
        assert_eq!(back.manifest().format_version, 2);
        assert!(!back.repeat().is_active());
        assert_eq!(answers(&back), answers(&m));
        let e = load_error(|_, d| edit_manifest(d, |v| v["format_version"] = 1.into()));
        assert!(e.contains("older") && e.contains("retrain"), "{e}");
    }

    #[test]
    fn version_names_sort_by_time_across_both_forms() {
        let new = new_version_name();
        assert!(is_version_name(&new), "{new}");
        assert!(is_version_name("20261123T180000Z-1a2b3c4d"));
        for bad in ["20261123T180000Z-1a2b3c4", "20261123T180000.12Z-1a2b3c4d", "x0261123T180000Z-1a2b3c4d", "current", ".tmp-20261123T180000Z-1a2b3c4d"] {
            assert!(!is_version_name(bad), "{bad}");
        }
        let mut names: Vec<String> = [
            "20261123T180001Z-00000000",
            "20261123T180000.500000Z-ffffffff",
            "20261123T180000Z-ffffffff",
            "20261123T180000.000001Z-00000000",
        ]
        .map(String::from)
        .to_vec();
        names.sort_by(by_age);
        assert_eq!(
            names,
            ["20261123T180000Z-ffffffff", "20261123T180000.000001Z-00000000", "20261123T180000.500000Z-ffffffff", "20261123T180001Z-00000000"]
        );
        // Names made back to back sort in the order they were made.
        let a = new_version_name();
        let b = new_version_name();
        assert_ne!(a, b);
        assert_ne!(by_age(&a, &b), std::cmp::Ordering::Greater);
    }

    #[test]
    fn prune_keeps_the_current_version_and_the_newest_others() {
        let root = tempfile::tempdir().unwrap();
        let names = ["20250101T000000Z-00000001", "20260101T000000.000001Z-00000002", "20260101T000000.000002Z-00000003"];
        for n in names {
            fs::create_dir(root.path().join(n)).unwrap();
        }
        fs::create_dir(root.path().join("unrelated")).unwrap();
        crate::model::publish::prune(root.path(), Retention { keep: 1, grace: std::time::Duration::ZERO }, names[0]).unwrap();
        let left: HashSet<String> = fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(left, HashSet::from([names[0].to_string(), "unrelated".to_string()]), "keep 1: only current");
    }

    fn event() -> impl Strategy<Value = Event> {
        (0u8..12, 0u8..15, 0usize..4, 0i64..1000).prop_map(|(u, i, k, t)| Event {
            user_id: format!("u{u}"),
            item_id: format!("i{i}"),
            kind: [EventKind::View, EventKind::Cart, EventKind::Purchase, EventKind::Rating][k],
            timestamp: Some(t),
            value: None,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// Whatever it was trained on, a model reads back with the same answers.
        #[test]
        fn any_model_round_trips(events in proptest::collection::vec(event(), 1..120)) {
            let data = Dataset { events, ..Dataset::default() };
            let mut m = train(&data, TimeKind::Order, &fast_params(), &NoProgress);
            let root = tempfile::tempdir().unwrap();
            save(&mut m, root.path(), Retention::default()).unwrap();
            let back = load(root.path()).unwrap();
            prop_assert_eq!(back.user_ids(), m.user_ids());
            prop_assert_eq!(back.histories(), m.histories());
            prop_assert_eq!(answers(&back), answers(&m));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever bytes a model file holds — even with the checksum made to match, as a
        /// buggy writer or a hand edit would leave it — loading returns an error or a
        /// model, never a panic or a runaway allocation.
        #[test]
        fn arbitrary_file_contents_never_panic_the_loader(
            file in prop_oneof![
                Just("items.bin"), Just("users.bin"), Just("popularity.bin"), Just("neighbours.bin"),
                Just("collab_items.f32"), Just("collab_users.f32"), Just("content.f32"),
            ],
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            keep_prefix in any::<bool>(),
        ) {
            let (root, dir, _) = saved(&fast_params());
            let path = dir.join(file);
            // Either garbage, or the real file's start followed by garbage (a valid
            // length prefix with nonsense after it reaches deeper into the decoder).
            let mut content = if keep_prefix { fs::read(&path).unwrap()[..16.min(fs::metadata(&path).unwrap().len() as usize)].to_vec() } else { Vec::new() };
            content.extend(&bytes);
            fs::write(&path, &content).unwrap();
            edit_manifest(&dir, |v| {
                v["files"][file] = serde_json::json!({ "sha256": hex::encode(Sha256::digest(&content)), "bytes": content.len() });
            });
            let outcome = std::panic::catch_unwind(|| load(root.path()).map(|_| ()));
            prop_assert!(outcome.is_ok(), "loading {} panicked", file);
        }
    }
}
