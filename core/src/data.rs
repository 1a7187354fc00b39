//! The canonical input data model and its CSV files.
//!
//! Every data source is converted to these four RFC 4180 CSV files (with a header row)
//! before training, so the trainer, the evaluator and tests all read one format:
//! `events.csv`, `items.csv`, `users.csv` and `social.csv`. Readers validate each row and
//! report the file and line of the first bad one, or skip and count bad rows on request.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The kind of a user–item event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The user looked at the item: the weakest signal by default.
    View,
    /// The user clicked the item, e.g. in a list or a search result.
    Click,
    /// The user added the item to their cart.
    Cart,
    /// The user bought the item; `value` may hold the amount.
    Purchase,
    /// The user liked or favourited the item.
    Like,
    /// The user shared the item with others.
    Share,
    /// The user rated the item; `value` holds the rating, if given.
    Rating,
    /// The item was shown to the user (in a list, a carousel). An exposure, not
    /// something the user did with the item: kept in the event log for item metrics,
    /// never trained on, never counted as seen (see [`EventKind::is_interaction`]).
    Impression,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 8] = [
        EventKind::View,
        EventKind::Click,
        EventKind::Cart,
        EventKind::Purchase,
        EventKind::Like,
        EventKind::Share,
        EventKind::Rating,
        EventKind::Impression,
    ];

    /// Whether the user acted on the item (every kind but an impression): what training,
    /// evaluation and the seen set count.
    pub fn is_interaction(self) -> bool {
        self != EventKind::Impression
    }

    /// The lower-case name used in `events.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::View => "view",
            EventKind::Click => "click",
            EventKind::Cart => "cart",
            EventKind::Purchase => "purchase",
            EventKind::Like => "like",
            EventKind::Share => "share",
            EventKind::Rating => "rating",
            EventKind::Impression => "impression",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        EventKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown event `{s}` (expected one of view, click, cart, purchase, like, share, rating, impression)")
            })
    }
}

/// One user–item interaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Id of the user who acted.
    pub user_id: String,
    /// Id of the item acted on.
    pub item_id: String,
    /// What the user did.
    pub kind: EventKind,
    /// Unix seconds, or only an order number (see [`TimeKind`]).
    pub timestamp: Option<i64>,
    /// Rating, play count or order amount.
    pub value: Option<f32>,
}

impl Event {
    /// An event without a value.
    pub fn new(user_id: impl Into<String>, item_id: impl Into<String>, kind: EventKind, timestamp: Option<i64>) -> Event {
        Event {
            user_id: user_id.into(),
            item_id: item_id.into(),
            kind,
            timestamp,
            value: None,
        }
    }
}

/// What the event timestamps mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeKind {
    /// Unix seconds: decay counts from the latest timestamp in the file.
    Unix,
    /// Only an order: decay counts by each user's event rank.
    Order,
    /// No timestamps at all: the file order is the order.
    None,
}

impl TimeKind {
    /// Timestamps below this are taken as order numbers, not unix seconds (1973-03-03).
    pub const UNIX_FLOOR: i64 = 100_000_000;

    /// Infers the kind from the events: unix seconds if every timestamp is a plausible
    /// date, an order if any is small, none if no event has one.
    pub fn detect(events: &[Event]) -> TimeKind {
        let mut any = false;
        for e in events {
            if let Some(t) = e.timestamp {
                any = true;
                if t < Self::UNIX_FLOOR {
                    return TimeKind::Order;
                }
            }
        }
        if any {
            TimeKind::Unix
        } else {
            TimeKind::None
        }
    }
}

/// The wall clock in unix seconds (0 if the clock reads before 1970): the server's
/// "now" for stamping and bounding times, and a model's "now" when its data has none.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// How far past the wall clock a time may lie (client clocks run ahead): ingest, the
/// catalogue's listing times and `train` refuse anything later.
pub const MAX_FUTURE_SECONDS: i64 = 86_400;

/// A place on Earth (WGS 84 degrees): a store or pick-up point an item is sold from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    /// Latitude in degrees, −90 to 90.
    pub lat: f64,
    /// Longitude in degrees, −180 to 180.
    pub lon: f64,
}

/// Mean Earth radius in kilometres (the haversine distance's sphere).
const EARTH_RADIUS_KM: f64 = 6371.0088;

impl GeoPoint {
    /// A point, or a message naming what is out of range.
    pub fn new(lat: f64, lon: f64) -> std::result::Result<GeoPoint, String> {
        Self::check_latitude(lat).map_err(|e| format!("latitude {e}"))?;
        Self::check_longitude(lon).map_err(|e| format!("longitude {e}"))?;
        Ok(GeoPoint { lat, lon })
    }

    /// Checks a latitude; the message says what is wrong ("must be between …").
    pub fn check_latitude(lat: f64) -> std::result::Result<(), String> {
        match lat.is_finite() && (-90.0..=90.0).contains(&lat) {
            true => Ok(()),
            false => Err(format!("must be between -90 and 90, got {lat}")),
        }
    }

    /// Checks a longitude; the message says what is wrong.
    pub fn check_longitude(lon: f64) -> std::result::Result<(), String> {
        match lon.is_finite() && (-180.0..=180.0).contains(&lon) {
            true => Ok(()),
            false => Err(format!("must be between -180 and 180, got {lon}")),
        }
    }

    /// Great-circle (haversine) distance to `other` in kilometres.
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

/// One catalogue entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Unique item id (see [`validate_id`]).
    pub item_id: String,
    /// Display title, possibly empty; its words are content features.
    pub title: String,
    /// Category, possibly empty; a content feature and what a query's category filter matches.
    pub category: String,
    /// Brand, possibly empty; a content feature.
    pub brand: String,
    /// Price, if known (reading rejects negative ones); its band among the catalogue's prices is a content feature.
    pub price: Option<f32>,
    /// Free-form tags (`|`-separated in `items.csv`); each is a content feature.
    pub tags: Vec<String>,
    /// Whether the item may be recommended (`false`: out of stock); empty in the CSV reads as `true`.
    pub available: bool,
    /// Where the item is sold or picked up, if it has a place (optional `latitude` and
    /// `longitude` columns): what "near you" filters and boosts use.
    pub location: Option<GeoPoint>,
    /// When the item was put on sale (unix seconds; optional `listed_at` column); the
    /// trainer fills it from the item's first event where the catalogue does not say,
    /// and "new arrival" boosts read it.
    pub listed_at: Option<i64>,
}

/// The catalogue entry as model formats up to 4 and event logs written before locations
/// stored it (bincode keeps no field names, so the old layout is decoded as it was).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemV1 {
    /// See [`Item::item_id`].
    pub item_id: String,
    /// See [`Item::title`].
    pub title: String,
    /// See [`Item::category`].
    pub category: String,
    /// See [`Item::brand`].
    pub brand: String,
    /// See [`Item::price`].
    pub price: Option<f32>,
    /// See [`Item::tags`].
    pub tags: Vec<String>,
    /// See [`Item::available`].
    pub available: bool,
}

impl From<ItemV1> for Item {
    fn from(v: ItemV1) -> Item {
        Item {
            item_id: v.item_id,
            title: v.title,
            category: v.category,
            brand: v.brand,
            price: v.price,
            tags: v.tags,
            available: v.available,
            location: None,
            listed_at: None,
        }
    }
}

impl Item {
    /// Whether the item was listed within `days` days before `now` (unix seconds); a
    /// listing after `now` counts too (an entry stamped by a server's clock).
    pub fn listed_within(&self, now: i64, days: i64) -> bool {
        self.listed_at.is_some_and(|t| now.saturating_sub(t) <= days.saturating_mul(86_400))
    }

    /// An item known only by its id (seen in events but absent from the catalogue).
    pub fn bare(item_id: impl Into<String>) -> Item {
        Item {
            item_id: item_id.into(),
            title: String::new(),
            category: String::new(),
            brand: String::new(),
            price: None,
            tags: Vec::new(),
            available: true,
            location: None,
            listed_at: None,
        }
    }
}

/// User attributes; every field but the id may be empty.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct User {
    /// Unique user id (see [`validate_id`]).
    pub user_id: String,
    /// Region, free text.
    pub region: String,
    /// Age or age band, free text (e.g. `25-34`).
    pub age: String,
    /// Gender, free text.
    pub gender: String,
    /// Occupation, free text.
    pub occupation: String,
    /// Income or income band, free text.
    pub income: String,
}

/// The kind of a social edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocialKind {
    /// A friendship (`friend` in `social.csv`).
    Friend,
    /// A one-way follow or trust relation (`follow` in `social.csv`).
    Follow,
}

/// A directed social edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocialEdge {
    /// The user the edge starts from.
    pub user_id: String,
    /// The user the edge points to.
    pub other_id: String,
    /// What relation the edge records.
    pub kind: SocialKind,
    /// Strength of the relation (e.g. a trust value); 1 when empty in the CSV.
    pub weight: f32,
}

/// A user's membership of a community (a group chat, a community group-buying circle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The member.
    pub user_id: String,
    /// The community's id.
    pub community_id: String,
}

/// Everything the trainer can learn from.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// User–item events; file order breaks ties between equal timestamps.
    pub events: Vec<Event>,
    /// Catalogue entries; items seen only in events need not be listed.
    pub items: Vec<Item>,
    /// User attributes; users seen only in events need not be listed.
    pub users: Vec<User>,
    /// Social edges: whom users are friends with or follow (see [`crate::social`]).
    pub social: Vec<SocialEdge>,
    /// Community memberships (see [`crate::communities`]).
    pub memberships: Vec<Membership>,
}

/// How a reader treats malformed rows.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Skip malformed rows (and count them) instead of stopping at the first.
    pub skip_invalid: bool,
}

/// Rows read from one file plus the number of malformed rows skipped.
#[derive(Debug, Clone)]
pub struct ReadReport<T> {
    /// The rows that parsed, in file order.
    pub rows: Vec<T>,
    /// Malformed rows skipped; always 0 unless `skip_invalid` is set.
    pub skipped: usize,
    /// Lines those rows spanned (a row with a quoted line break spans several).
    pub skipped_lines: u64,
    /// The first skipped row's error, to show the user what was wrong.
    pub first_error: Option<String>,
}

/// The header row `events.csv` must have, in this order.
pub const EVENTS_HEADER: [&str; 5] = ["user_id", "item_id", "event", "timestamp", "value"];
/// The header row `items.csv` must start with, in this order.
pub const ITEMS_HEADER: [&str; 7] = [
    "item_id",
    "title",
    "category",
    "brand",
    "price",
    "tags",
    "available",
];
/// Columns `items.csv` may add after [`ITEMS_HEADER`], in any order: the item's place
/// (`latitude` and `longitude`, both or neither) and when it went on sale (`listed_at`,
/// unix seconds).
pub const ITEMS_OPTIONAL: [&str; 3] = ["latitude", "longitude", "listed_at"];
/// The header row `users.csv` must have, in this order.
pub const USERS_HEADER: [&str; 6] = ["user_id", "region", "age", "gender", "occupation", "income"];
/// The header row `social.csv` must have, in this order.
pub const SOCIAL_HEADER: [&str; 4] = ["user_id", "other_id", "kind", "weight"];

/// Columns of `communities.csv`.
pub const COMMUNITIES_HEADER: [&str; 2] = ["user_id", "community_id"];

/// The largest timestamp (either sign) `events.csv` takes: unix seconds reach it in the
/// year 5138, milliseconds already in 1973.
pub const MAX_TIMESTAMP: i64 = 100_000_000_000;

/// Checks that an id is usable: non-empty, free of TAB, comma and newlines, and without
/// whitespace at either end (" i1" would silently be another item than "i1").
pub fn validate_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() {
        return Err("empty id".into());
    }
    if id.trim() != id {
        return Err(format!("id {id:?} begins or ends with whitespace"));
    }
    if let Some(c) = id.chars().find(|c| matches!(c, '\t' | ',' | '\n' | '\r')) {
        return Err(format!("id {id:?} contains {c:?} (ids may not contain TAB, comma or newline)"));
    }
    Ok(())
}

fn parse_id(field: &str, what: &str) -> std::result::Result<String, String> {
    validate_id(field).map_err(|e| format!("{what}: {e}"))?;
    Ok(field.to_string())
}

fn parse_opt<T: FromStr>(field: &str, what: &str) -> std::result::Result<Option<T>, String> {
    let f = field.trim();
    if f.is_empty() {
        return Ok(None);
    }
    f.parse::<T>()
        .map(Some)
        .map_err(|_| format!("{what}: cannot parse {f:?}"))
}

fn parse_finite(field: &str, what: &str) -> std::result::Result<Option<f32>, String> {
    match parse_opt::<f32>(field, what)? {
        Some(v) if !v.is_finite() => Err(format!("{what}: {v} is not a finite number")),
        other => Ok(other),
    }
}

fn parse_bool(field: &str, what: &str) -> std::result::Result<bool, String> {
    match field.trim().to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" | "y" => Ok(true),
        "false" | "0" | "no" | "n" => Ok(false),
        other => Err(format!("{what}: expected true/false, got {other:?}")),
    }
}

/// Where a file's optional columns are, by their position in the optional list.
struct Extra(Vec<Option<usize>>);

impl Extra {
    /// The field of optional column `n` in `r`, if the file has that column.
    fn get<'r>(&self, r: &'r csv::StringRecord, n: usize) -> Option<&'r str> {
        self.0.get(n).copied().flatten().and_then(|at| r.get(at))
    }
}

/// Checks a header: `header` in order, then any of `optional` once each, in any order.
fn match_header(found: &[&str], header: &[&str], optional: &[&str]) -> std::result::Result<Extra, String> {
    let expected = || {
        let mut e = header.join(",");
        if !optional.is_empty() {
            e.push_str(&format!("` optionally followed by any of `{}", optional.join(",")));
        }
        e
    };
    if found.len() < header.len() || found[..header.len()] != *header {
        return Err(format!("header is `{}`, expected `{}`", found.join(","), expected()));
    }
    let mut at = vec![None; optional.len()];
    for (n, name) in found.iter().enumerate().skip(header.len()) {
        match optional.iter().position(|o| o == name) {
            Some(o) if at[o].is_none() => at[o] = Some(n),
            Some(_) => return Err(format!("header names column `{name}` twice")),
            None => return Err(format!("header has unknown column `{name}`; expected `{}`", expected())),
        }
    }
    Ok(Extra(at))
}

/// Reads a CSV with the given header (and optional trailing columns), turning each
/// record into a `T` with `parse`.
fn read_csv<R: Read, T>(
    input: R,
    file: &str,
    header: &[&str],
    optional: &[&str],
    options: ReadOptions,
    mut parse: impl FnMut(&csv::StringRecord, &Extra) -> std::result::Result<T, String>,
) -> Result<ReadReport<T>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let found = reader
        .headers()
        .map_err(|e| Error::invalid_file(file, format!("cannot read header: {e}")))?
        .clone();
    let found_names: Vec<&str> = found.iter().map(str::trim).collect();
    let extra = match_header(&found_names, header, optional).map_err(|message| Error::InvalidRow {
        file: file.to_string(),
        line: 1,
        message,
    })?;
    let width = found_names.len();
    let mut report = ReadReport {
        rows: Vec::new(),
        skipped: 0,
        skipped_lines: 0,
        first_error: None,
    };
    let mut record = csv::StringRecord::new();
    loop {
        let line_hint = reader.position().line();
        let outcome = match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(line_hint, |p| p.line());
                if record.len() != width {
                    Err((line, format!("expected {width} fields, found {}", record.len())))
                } else {
                    parse(&record, &extra).map_err(|m| (line, m))
                }
            }
            Err(e) => {
                let line = e.position().map_or(line_hint, |p| p.line());
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(Error::invalid_file(file, e.to_string()));
                }
                Err((line, format!("malformed CSV: {e}")))
            }
        };
        // Lines this record took: more than one only for a quoted field with line breaks.
        let spanned = reader.position().line().saturating_sub(line_hint).max(1);
        match outcome {
            Ok(row) => report.rows.push(row),
            Err((line, message)) if spanned > 1 => {
                // A bad row that swallowed line breaks is almost always a quote opened
                // and never closed: skipping it would silently drop every line it ate.
                return Err(Error::InvalidRow {
                    file: file.to_string(),
                    line,
                    message: format!(
                        "a quoted field opened on this line runs over {spanned} lines (to line {}): is a closing quote missing? ({message})",
                        line + spanned - 1
                    ),
                });
            }
            Err((line, message)) => {
                if !options.skip_invalid {
                    return Err(Error::InvalidRow {
                        file: file.to_string(),
                        line,
                        message,
                    });
                }
                if report.first_error.is_none() {
                    report.first_error = Some(format!("{file}:{line}: {message}"));
                }
                report.skipped += 1;
                report.skipped_lines += spanned;
            }
        }
    }
    Ok(report)
}

fn open(path: &Path) -> Result<BufReader<File>> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| Error::io(path, e))
}

fn parse_event(r: &csv::StringRecord, _: &Extra) -> std::result::Result<Event, String> {
    Ok(Event {
        user_id: parse_id(&r[0], "user_id")?,
        item_id: parse_id(&r[1], "item_id")?,
        kind: r[2].trim().parse()?,
        timestamp: match parse_opt::<i64>(&r[3], "timestamp")? {
            Some(t) if t.unsigned_abs() > MAX_TIMESTAMP as u64 => {
                return Err(format!("timestamp: {t} is no unix time in seconds (milliseconds? at most {MAX_TIMESTAMP})"));
            }
            t => t,
        },
        value: parse_finite(&r[4], "value")?,
    })
}

fn parse_item(r: &csv::StringRecord, extra: &Extra) -> std::result::Result<Item, String> {
    let lat = extra.get(r, 0).map(|f| parse_opt::<f64>(f, "latitude")).transpose()?.flatten();
    let lon = extra.get(r, 1).map(|f| parse_opt::<f64>(f, "longitude")).transpose()?.flatten();
    let location = match (lat, lon) {
        (Some(lat), Some(lon)) => Some(GeoPoint::new(lat, lon)?),
        (None, None) => None,
        (Some(_), None) => return Err("latitude is set but longitude is empty".into()),
        (None, Some(_)) => return Err("longitude is set but latitude is empty".into()),
    };
    let listed_at = extra.get(r, 2).map(|f| parse_opt::<i64>(f, "listed_at")).transpose()?.flatten();
    let price = parse_finite(&r[4], "price")?;
    if let Some(p) = price {
        if p < 0.0 {
            return Err(format!("price: {p} is negative"));
        }
    }
    Ok(Item {
        item_id: parse_id(&r[0], "item_id")?,
        title: r[1].to_string(),
        category: r[2].trim().to_string(),
        brand: r[3].trim().to_string(),
        price,
        tags: r[5]
            .split('|')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        available: parse_bool(&r[6], "available")?,
        location,
        listed_at,
    })
}

fn parse_user(r: &csv::StringRecord, _: &Extra) -> std::result::Result<User, String> {
    Ok(User {
        user_id: parse_id(&r[0], "user_id")?,
        region: r[1].trim().to_string(),
        age: r[2].trim().to_string(),
        gender: r[3].trim().to_string(),
        occupation: r[4].trim().to_string(),
        income: r[5].trim().to_string(),
    })
}

fn parse_social(r: &csv::StringRecord, _: &Extra) -> std::result::Result<SocialEdge, String> {
    let kind = match r[2].trim() {
        "friend" => SocialKind::Friend,
        "follow" => SocialKind::Follow,
        other => return Err(format!("kind: expected friend or follow, got {other:?}")),
    };
    Ok(SocialEdge {
        user_id: parse_id(&r[0], "user_id")?,
        other_id: parse_id(&r[1], "other_id")?,
        kind,
        weight: match parse_finite(&r[3], "weight")? {
            Some(w) if w <= 0.0 => return Err(format!("weight: must be positive, got {w}")),
            Some(w) if w > crate::social::MAX_EDGE_WEIGHT => {
                return Err(format!("weight: at most {}, got {w}", crate::social::MAX_EDGE_WEIGHT));
            }
            Some(w) => w,
            None => 1.0,
        },
    })
}

fn parse_membership(r: &csv::StringRecord, _: &Extra) -> std::result::Result<Membership, String> {
    Ok(Membership { user_id: parse_id(&r[0], "user_id")?, community_id: parse_id(&r[1], "community_id")? })
}

/// Reads `events.csv` from any reader; `file` names it in errors.
pub fn read_events_from<R: Read>(input: R, file: &str, options: ReadOptions) -> Result<ReadReport<Event>> {
    read_csv(input, file, &EVENTS_HEADER, &[], options, parse_event)
}

/// Reads an `events.csv` file; errors name it by its path.
pub fn read_events(path: &Path, options: ReadOptions) -> Result<ReadReport<Event>> {
    read_events_from(open(path)?, &path.display().to_string(), options)
}

/// Reads an `items.csv` file; errors name it by its path.
pub fn read_items(path: &Path, options: ReadOptions) -> Result<ReadReport<Item>> {
    read_csv(open(path)?, &path.display().to_string(), &ITEMS_HEADER, &ITEMS_OPTIONAL, options, parse_item)
}

/// Reads a `users.csv` file; errors name it by its path.
pub fn read_users(path: &Path, options: ReadOptions) -> Result<ReadReport<User>> {
    read_csv(open(path)?, &path.display().to_string(), &USERS_HEADER, &[], options, parse_user)
}

/// Reads a `communities.csv` file; errors name it by its path.
pub fn read_memberships(path: &Path, options: ReadOptions) -> Result<ReadReport<Membership>> {
    read_csv(open(path)?, &path.display().to_string(), &COMMUNITIES_HEADER, &[], options, parse_membership)
}

/// Reads a `social.csv` file; errors name it by its path.
pub fn read_social(path: &Path, options: ReadOptions) -> Result<ReadReport<SocialEdge>> {
    read_csv(open(path)?, &path.display().to_string(), &SOCIAL_HEADER, &[], options, parse_social)
}

fn fmt_opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn write_csv<T>(
    path: &Path,
    header: &[&str],
    rows: &[T],
    mut fields: impl FnMut(&T) -> Vec<String>,
) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = csv::Writer::from_writer(BufWriter::new(file));
    let csv_err = |e: csv::Error| Error::io(path, std::io::Error::other(e.to_string()));
    w.write_record(header).map_err(csv_err)?;
    for row in rows {
        w.write_record(fields(row)).map_err(csv_err)?;
    }
    let mut inner = w
        .into_inner()
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    inner.flush().map_err(|e| Error::io(path, e))
}

/// Writes events as `events.csv` with its header, replacing any existing file.
pub fn write_events(path: &Path, events: &[Event]) -> Result<()> {
    write_csv(path, &EVENTS_HEADER, events, |e| {
        vec![
            e.user_id.clone(),
            e.item_id.clone(),
            e.kind.to_string(),
            fmt_opt(&e.timestamp),
            fmt_opt(&e.value),
        ]
    })
}

/// Writes catalogue entries as `items.csv` with its header, replacing any existing file;
/// the optional columns are written only when some item has a value for them.
pub fn write_items(path: &Path, items: &[Item]) -> Result<()> {
    let places = items.iter().any(|i| i.location.is_some());
    let listed = items.iter().any(|i| i.listed_at.is_some());
    let mut header = ITEMS_HEADER.to_vec();
    if places {
        header.extend(["latitude", "longitude"]);
    }
    if listed {
        header.push("listed_at");
    }
    write_csv(path, &header, items, |i| {
        let mut row = vec![
            i.item_id.clone(),
            i.title.clone(),
            i.category.clone(),
            i.brand.clone(),
            fmt_opt(&i.price),
            i.tags.join("|"),
            i.available.to_string(),
        ];
        if places {
            row.push(fmt_opt(&i.location.map(|p| p.lat)));
            row.push(fmt_opt(&i.location.map(|p| p.lon)));
        }
        if listed {
            row.push(fmt_opt(&i.listed_at));
        }
        row
    })
}

/// Writes user attributes as `users.csv` with its header, replacing any existing file.
pub fn write_users(path: &Path, users: &[User]) -> Result<()> {
    write_csv(path, &USERS_HEADER, users, |u| {
        vec![
            u.user_id.clone(),
            u.region.clone(),
            u.age.clone(),
            u.gender.clone(),
            u.occupation.clone(),
            u.income.clone(),
        ]
    })
}

/// Writes social edges as `social.csv` with its header, replacing any existing file.
pub fn write_social(path: &Path, edges: &[SocialEdge]) -> Result<()> {
    write_csv(path, &SOCIAL_HEADER, edges, |s| {
        vec![
            s.user_id.clone(),
            s.other_id.clone(),
            match s.kind {
                SocialKind::Friend => "friend".into(),
                SocialKind::Follow => "follow".into(),
            },
            s.weight.to_string(),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, skip: bool) -> Result<ReadReport<Event>> {
        read_events_from(text.as_bytes(), "events.csv", ReadOptions { skip_invalid: skip })
    }

    #[test]
    fn parses_valid_events() {
        let r = read("user_id,item_id,event,timestamp,value\nu1,i1,view,,\nu2,i2,rating,5,4.5\n", false).unwrap();
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[1].kind, EventKind::Rating);
        assert_eq!(r.rows[1].timestamp, Some(5));
        assert_eq!(r.rows[1].value, Some(4.5));
        assert_eq!(r.rows[0].value, None);
    }

    #[test]
    fn bad_row_names_line() {
        let err = read("user_id,item_id,event,timestamp,value\nu1,i1,view,,\nu2,i2,buy,,\n", false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("events.csv:3:"), "{msg}");
        assert!(msg.contains("unknown event `buy`"), "{msg}");
    }

    #[test]
    fn wrong_field_count_and_bad_number() {
        let err = read("user_id,item_id,event,timestamp,value\nu1,i1\n", false).unwrap_err();
        assert!(err.to_string().starts_with("events.csv:2:"), "{err}");
        let err = read("user_id,item_id,event,timestamp,value\nu1,i1,view,abc,\n", false).unwrap_err();
        assert!(err.to_string().contains("timestamp"), "{err}");
    }

    #[test]
    fn skip_invalid_counts() {
        let r = read(
            "user_id,item_id,event,timestamp,value\nu1,i1,view,,\n,i2,view,,\nu3,\"a,b\",view,,\nu4,i4,view,,\n",
            true,
        )
        .unwrap();
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.skipped, 2);
        assert!(r.first_error.unwrap().starts_with("events.csv:3:"));
    }

    #[test]
    fn ids_with_outer_whitespace_and_millisecond_times_are_refused_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.csv");
        let read = |body: &str| {
            std::fs::write(&path, format!("user_id,item_id,event,timestamp,value\n{body}")).unwrap();
            read_events(&path, ReadOptions::default())
        };
        assert_eq!(read("u1,red shoe,view,1700000000,\n").unwrap().rows[0].item_id, "red shoe", "inner spaces are fine");
        let e = read("u1,i1,view,1700000000,\nu1, i2,view,1700000001,\n").unwrap_err().to_string();
        assert!(e.contains("events.csv:3:") && e.contains("whitespace"), "{e}");
        let e = read("u1,i1,view,1700000000000,\n").unwrap_err().to_string();
        assert!(e.contains("events.csv:2:") && e.contains("milliseconds"), "{e}");
    }

    #[test]
    fn social_rows_need_a_known_kind_and_a_positive_weight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("social.csv");
        let read = |body: &str| {
            std::fs::write(&path, format!("user_id,other_id,kind,weight\n{body}")).unwrap();
            read_social(&path, ReadOptions::default())
        };
        let ok = read("a,b,friend,\nb,c,follow,2.5\na,a,follow,1\n").unwrap();
        assert_eq!(ok.rows.len(), 3, "a self-loop is read (the graph ignores it)");
        assert_eq!((ok.rows[0].weight, ok.rows[1].kind), (1.0, SocialKind::Follow));
        let e = read("a,b,friend,1\na,c,follow,-1\n").unwrap_err().to_string();
        assert!(e.contains("social.csv:3:") && e.contains("weight: must be positive"), "{e}");
        let e = read("a,b,enemy,1\n").unwrap_err().to_string();
        assert!(e.contains("social.csv:2:") && e.contains("friend or follow"), "{e}");
        let e = read("a,b,follow,1e38\n").unwrap_err().to_string();
        assert!(e.contains("social.csv:2:") && e.contains("weight: at most"), "{e}");
    }

    #[test]
    fn membership_rows_need_both_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("communities.csv");
        std::fs::write(&path, "user_id,community_id\na,mums-club\nb,\n").unwrap();
        let e = read_memberships(&path, ReadOptions::default()).unwrap_err().to_string();
        assert!(e.contains("communities.csv:3:") && e.contains("community_id"), "{e}");
        std::fs::write(&path, "user_id,community_id\na,mums-club\n").unwrap();
        let ok = read_memberships(&path, ReadOptions::default()).unwrap();
        assert_eq!(ok.rows, vec![Membership { user_id: "a".into(), community_id: "mums-club".into() }]);
    }

    #[test]
    fn bad_header_is_line_one() {
        let err = read("user,item\nu1,i1\n", false).unwrap_err();
        assert!(err.to_string().starts_with("events.csv:1:"), "{err}");
    }

    #[test]
    fn round_trip_items() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("items.csv");
        let items = vec![Item {
            item_id: "i1".into(),
            title: "A, \"quoted\" title".into(),
            category: "toys".into(),
            brand: "acme".into(),
            price: Some(9.5),
            tags: vec!["red".into(), "kids".into()],
            available: false,
            location: Some(GeoPoint { lat: 51.5072, lon: -0.1276 }),
            listed_at: Some(1_767_225_600),
        }, Item::bare("i2")];
        write_items(&path, &items).unwrap();
        let back = read_items(&path, ReadOptions::default()).unwrap();
        assert_eq!(back.rows, items);
        // Without places or dates the file has the seven columns older readers expect.
        write_items(&path, &items[1..]).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("item_id,title,category,brand,price,tags,available\n"));
    }

    #[test]
    fn optional_item_columns_in_any_order_and_checked() {
        let read = |text: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("items.csv");
            std::fs::write(&path, text).unwrap();
            read_items(&path, ReadOptions::default()).map(|r| r.rows).map_err(|e| e.to_string())
        };
        let h = "item_id,title,category,brand,price,tags,available";
        let rows = read(&format!("{h},listed_at,longitude,latitude\ni1,,,,,,,1700000000,2.35,48.85\ni2,,,,,,,,,\n")).unwrap();
        assert_eq!(rows[0].location, Some(GeoPoint { lat: 48.85, lon: 2.35 }));
        assert_eq!(rows[0].listed_at, Some(1_700_000_000));
        assert_eq!((rows[1].location, rows[1].listed_at), (None, None));
        let bad = [
            (format!("{h},latitude,longitude\ni1,,,,,,,91,0\n"), "items.csv:2: latitude must be between -90 and 90"),
            (format!("{h},latitude,longitude\ni1,,,,,,,10,\n"), "items.csv:2: latitude is set but longitude is empty"),
            (format!("{h},latitude,longitude\ni1,,,,,,,x,1\n"), "items.csv:2: latitude: cannot parse"),
            (format!("{h},colour\n"), "items.csv:1: header has unknown column `colour`"),
            (format!("{h},latitude,latitude\n"), "items.csv:1: header names column `latitude` twice"),
            (format!("{h},listed_at\ni1,,,,,,\n"), "items.csv:2: expected 8 fields, found 7"),
        ];
        for (text, want) in bad {
            let e = read(&text).unwrap_err();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn haversine_distance() {
        let paris = GeoPoint::new(48.8566, 2.3522).unwrap();
        let london = GeoPoint::new(51.5072, -0.1276).unwrap();
        let d = paris.distance_km(&london);
        assert!((d - 343.5).abs() < 2.0, "{d}");
        assert_eq!(paris.distance_km(&paris), 0.0);
        assert!(GeoPoint::new(0.0, 180.5).is_err());
    }

    #[test]
    fn time_kind_detection() {
        let mk = |t| Event {
            user_id: "u".into(),
            item_id: "i".into(),
            kind: EventKind::View,
            timestamp: t,
            value: None,
        };
        assert_eq!(TimeKind::detect(&[mk(Some(881250949))]), TimeKind::Unix);
        assert_eq!(TimeKind::detect(&[mk(Some(881250949)), mk(Some(3))]), TimeKind::Order);
        assert_eq!(TimeKind::detect(&[mk(None)]), TimeKind::None);
    }

    #[test]
    fn an_unclosed_quote_is_an_error_even_when_skipping_invalid_rows() {
        let mut text = String::from("user_id,item_id,event,timestamp,value\n");
        text.push_str("u1,i1,view,,\n");
        text.push_str("u2,\"i2,view,,\n"); // line 3: the quote never closes
        for n in 0..3000 {
            text.push_str(&format!("u{n},i{n},view,,\n"));
        }
        for skip_invalid in [false, true] {
            let err = read_events_from(text.as_bytes(), "events.csv", ReadOptions { skip_invalid }).unwrap_err().to_string();
            assert!(err.starts_with("events.csv:3:"), "{err}");
            assert!(err.contains("closing quote"), "{err}");
        }
        // A bad row on one line is still skipped and counted, lines too.
        let text = "user_id,item_id,event,timestamp,value\nu1,i1,view,,\nu1,i2,teleport,,\nu2,i1,view,,\n";
        let r = read_events_from(text.as_bytes(), "events.csv", ReadOptions { skip_invalid: true }).unwrap();
        assert_eq!((r.rows.len(), r.skipped, r.skipped_lines), (2, 1, 1));
        // A quoted line break inside a valid field is fine.
        let items = "item_id,title,category,brand,price,tags,available\ni1,\"two\nlines\",toys,,,,\ni2,t,toys,,,,\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("items.csv");
        std::fs::write(&path, items).unwrap();
        let r = read_items(&path, ReadOptions { skip_invalid: true }).unwrap();
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[0].title, "two\nlines");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn kind() -> impl Strategy<Value = EventKind> {
            prop_oneof![
                Just(EventKind::View),
                Just(EventKind::Click),
                Just(EventKind::Cart),
                Just(EventKind::Purchase),
                Just(EventKind::Like),
                Just(EventKind::Share),
                Just(EventKind::Rating),
            ]
        }

        fn event() -> impl Strategy<Value = Event> {
            // Ids: anything the format allows, quotes and inner spaces included.
            let id = "[a-zA-Z0-9_.:;|\"'-]([a-zA-Z0-9_.:;|\"' -]{0,10}[a-zA-Z0-9_.:;|\"'-])?";
            (id, id, kind(), proptest::option::of(-5i64..2_000_000_000), proptest::option::of(0.0f32..1e6)).prop_map(
                |(user_id, item_id, kind, timestamp, value)| Event {
                    user_id,
                    item_id,
                    kind,
                    timestamp,
                    value,
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Whatever the events, writing and reading them back gives the same events.
            #[test]
            fn events_round_trip(events in proptest::collection::vec(event(), 0..40)) {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("events.csv");
                write_events(&path, &events).unwrap();
                let back = read_events(&path, ReadOptions::default()).unwrap();
                prop_assert_eq!(back.skipped, 0);
                prop_assert_eq!(back.rows, events);
            }

            /// Arbitrary bytes after a valid header never panic the reader: each row is
            /// read, skipped with a line number, or stops the read with an error naming it.
            #[test]
            fn arbitrary_input_never_panics(body in proptest::collection::vec(any::<u8>(), 0..400), skip in any::<bool>()) {
                let mut input = b"user_id,item_id,event,timestamp,value\n".to_vec();
                input.extend(body);
                match read_events_from(&input[..], "fuzz.csv", ReadOptions { skip_invalid: skip }) {
                    Ok(report) => prop_assert!(report.rows.iter().all(|e| validate_id(&e.user_id).is_ok() && validate_id(&e.item_id).is_ok())),
                    Err(e) => prop_assert!(e.to_string().starts_with("fuzz.csv"), "{}", e),
                }
            }
        }
    }
}
