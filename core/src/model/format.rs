//! The versioned, checksummed model directory: the only contract between the trainer
//! and the server.
//!
//! ```text
//! MODEL_ROOT/
//!   current                             # name of the live version (replaced atomically)
//!   20261123T180000.123456Z-1a2b3c4d/   # one version
//!     manifest.json                     # format version, counts, parameters, serving
//!                                       # settings, SHA-256 of every file
//!     items.bin users.bin popularity.bin neighbours.bin
//!     collab_items.f32 collab_users.f32 content.f32
//!     collab_mips.hnsw.{graph,data} collab_cos.hnsw.{graph,data} content.hnsw.{graph,data}
//! ```
//!
//! A version is written to `MODEL_ROOT/.tmp-<version>/`, fsynced and renamed into place,
//! then `current` is replaced by rename, so a reader never sees a partial model. Loading
//! checks the format version and every checksum before decoding anything.
//!
//! Compatibility: a build reads its own format version and the one before it; older and
//! newer ones are refused with a message saying what to do. Format 2 added the manifest's
//! `serving` section; for a format-1 model it is derived from the recorded parameters.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Indexes, Model, ModelParts, UserHistory};
use crate::als::CollabModel;
use crate::ann::AnnIndex;
use crate::data::{Item, TimeKind, User};
use crate::error::{Error, Result};
use crate::ids::IdMap;
use crate::neighbors::Neighbours;
use crate::params::TrainParams;
use crate::settings::ServingSettings;

/// The model format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest model format this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = FORMAT_VERSION - 1;

/// Name of the pointer file in a model root.
pub const CURRENT: &str = "current";

/// Sizes recorded in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub users: usize,
    pub items: usize,
    pub events: usize,
    pub items_with_events: usize,
    pub items_with_content: usize,
}

/// Checksum and size of one model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub sha256: String,
    pub bytes: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub version: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub counts: Counts,
    pub time_kind: TimeKind,
    pub params: TrainParams,
    /// The settings the server scores with unless configured otherwise (format 2; derived
    /// from `params` for format 1).
    #[serde(default)]
    pub serving: ServingSettings,
    /// Seconds spent training (excluding writing).
    pub train_seconds: f64,
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
/// two trainers never pick the same name.
pub fn new_version_name() -> String {
    let now = chrono::Utc::now();
    format!("{}-{:08x}", now.format("%Y%m%dT%H%M%S%.6fZ"), rand::random::<u32>())
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
fn by_age(a: &String, b: &String) -> std::cmp::Ordering {
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

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Writes `model` as a new version under `root`, points `current` at it and removes all
/// but the newest `keep` versions (never the current one). Returns the version directory.
pub fn save(model: &mut Model, root: &Path, keep: usize) -> Result<PathBuf> {
    fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let version = model.manifest.version.clone();
    let tmp = root.join(format!(".tmp-{version}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
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
    write_file(&tmp, "collab_items.f32", &f32_bytes(&model.collab.item_factors), &mut files)?;
    write_file(&tmp, "collab_users.f32", &f32_bytes(&model.user_factors), &mut files)?;
    write_file(&tmp, "content.f32", &f32_bytes(&model.content), &mut files)?;
    for (name, index) in [
        ("collab_mips", &model.indexes.mips),
        ("collab_cos", &model.indexes.collab),
        ("content", &model.indexes.content),
    ] {
        if let Some(index) = index {
            for file in index.dump(&tmp, name)? {
                let path = tmp.join(&file);
                let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
                File::open(&path).and_then(|f| f.sync_all()).map_err(|e| Error::io(&path, e))?;
                files.insert(
                    file,
                    FileEntry {
                        sha256: hex::encode(Sha256::digest(&bytes)),
                        bytes: bytes.len() as u64,
                    },
                );
            }
        }
    }
    model.manifest.files = files;
    let manifest = serde_json::to_vec_pretty(&model.manifest)
        .map_err(|e| Error::model("manifest.json", format!("cannot encode: {e}")))?;
    let mut unused = BTreeMap::new();
    write_file(&tmp, "manifest.json", &manifest, &mut unused)?;
    sync_dir(&tmp)?;
    let dest = root.join(&version);
    fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    sync_dir(root)?;
    let pointer_tmp = root.join(".current.tmp");
    {
        let mut f = File::create(&pointer_tmp).map_err(|e| Error::io(&pointer_tmp, e))?;
        f.write_all(format!("{version}\n").as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&pointer_tmp, e))?;
    }
    let pointer = root.join(CURRENT);
    fs::rename(&pointer_tmp, &pointer).map_err(|e| Error::io(&pointer, e))?;
    sync_dir(root)?;
    prune(root, keep, &version)?;
    Ok(dest)
}

/// Removes old versions, keeping the newest `keep` (at least the current one).
fn prune(root: &Path, keep: usize, current: &str) -> Result<()> {
    let mut versions: Vec<String> = fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_version_name(n))
        .collect();
    versions.sort_by(by_age);
    versions.reverse();
    for old in versions.iter().skip(keep.max(1)) {
        if old != current {
            let path = root.join(old);
            fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Resolves `--model`: a version directory (has `manifest.json`) or a model root (has
/// `current`).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("manifest.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let pointer = path.join(CURRENT);
    if pointer.is_file() {
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

fn read_verified(dir: &Path, name: &str, manifest: &Manifest) -> Result<Vec<u8>> {
    let path = dir.join(name);
    let entry = manifest
        .files
        .get(name)
        .ok_or_else(|| Error::model(&path, "not listed in manifest.json"))?;
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::model(&path, format!("cannot read: {e}")))?;
    if bytes.len() as u64 != entry.bytes {
        return Err(Error::model(
            &path,
            format!("truncated or resized: {} bytes, manifest says {}", bytes.len(), entry.bytes),
        ));
    }
    let sum = hex::encode(Sha256::digest(&bytes));
    if sum != entry.sha256 {
        return Err(Error::model(&path, "checksum mismatch (file is corrupt or was modified)"));
    }
    Ok(bytes)
}

fn decode<T: serde::de::DeserializeOwned>(dir: &Path, name: &str, bytes: &[u8]) -> Result<T> {
    bincode::deserialize(bytes).map_err(|e| Error::model(dir.join(name), format!("cannot decode: {e}")))
}

fn matrix(dir: &Path, name: &str, bytes: &[u8], rows: usize, cols: usize) -> Result<Array2<f32>> {
    if bytes.len() != rows * cols * 4 {
        return Err(Error::model(
            dir.join(name),
            format!("holds {} bytes, expected {rows} × {cols} f32", bytes.len()),
        ));
    }
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Array2::from_shape_vec((rows, cols), data).map_err(|e| Error::model(dir.join(name), e.to_string()))
}

/// Reads and checks `manifest.json` of a version directory.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = fs::read(&path).map_err(|e| Error::model(&path, format!("cannot read: {e}")))?;
    let probe: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| Error::model(&path, format!("not valid JSON: {e}")))?;
    let version = match probe.get("format_version").and_then(|v| v.as_u64()) {
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
        Some(v) => v,
        None => return Err(Error::model(&path, "has no format_version")),
    };
    let mut manifest: Manifest =
        serde_json::from_value(probe).map_err(|e| Error::model(&path, format!("invalid manifest: {e}")))?;
    if version < 2 {
        // Format 1 kept the serving settings only inside the training parameters.
        manifest.serving = ServingSettings::from_params(&manifest.params);
    }
    Ok(manifest)
}

/// Loads and verifies a model from a version directory or model root.
pub fn load(path: &Path) -> Result<Model> {
    let dir = resolve(path)?;
    let manifest = read_manifest(&dir)?;
    // Verify every listed file before decoding anything.
    let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
    for name in manifest.files.keys() {
        if name.contains('/') || name.contains("..") {
            return Err(Error::model(dir.join("manifest.json"), format!("lists an invalid file name {name:?}")));
        }
        blobs.insert(name.clone(), read_verified(&dir, name, &manifest)?);
    }
    let take = |name: &str| -> Result<&Vec<u8>> {
        blobs
            .get(name)
            .ok_or_else(|| Error::model(dir.join(name), "missing from manifest.json"))
    };
    let items: Vec<Item> = decode(&dir, "items.bin", take("items.bin")?)?;
    let users_file: UsersFile = decode(&dir, "users.bin", take("users.bin")?)?;
    let popularity: Vec<f32> = decode(&dir, "popularity.bin", take("popularity.bin")?)?;
    let neighbours: Neighbours = decode(&dir, "neighbours.bin", take("neighbours.bin")?)?;
    let n_items = items.len();
    let n_users = users_file.ids.len();
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
    let item_factors = matrix(&dir, "collab_items.f32", take("collab_items.f32")?, n_items, d)?;
    let user_factors = matrix(&dir, "collab_users.f32", take("collab_users.f32")?, n_users, d)?;
    let content = matrix(&dir, "content.f32", take("content.f32")?, n_items, params.content.dim)?;
    drop(blobs);
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
    };
    let mut model = Model::from_parts(parts);
    // Indexes are read only where the recorded settings score through them (smaller
    // catalogues are published without; older models that carry them do not need them).
    if !model.default_settings().scores_exactly(n_items) {
        let count = |has: &[bool]| has.iter().filter(|&&h| h).count();
        let load_index = |name: &str, len: usize, dim: usize| -> Result<Option<AnnIndex>> {
            if len == 0 {
                return Ok(None);
            }
            for ext in ["hnsw.graph", "hnsw.data"] {
                if !model.manifest.files.contains_key(&format!("{name}.{ext}")) {
                    return Err(Error::model(dir.join(format!("{name}.{ext}")), "missing from manifest.json"));
                }
            }
            AnnIndex::load(&dir, name, len, dim).map(Some)
        };
        let indexes = Indexes {
            mips: load_index("collab_mips", count(&model.has_collab), d + 1)?,
            collab: load_index("collab_cos", count(&model.has_collab), d)?,
            content: load_index("content", count(&model.has_content), params.content.dim)?,
        };
        model.indexes = indexes;
    }
    Ok(model)
}
