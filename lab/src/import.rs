//! Converters from the public research data sets to the canonical [`Dataset`].
//!
//! Each converter reads the files exactly as distributed (see the data sets' README) and
//! keeps their ids as they are, so canonical files, models and client output all speak
//! the original ids.

use std::fs;
use std::path::Path;

use affinity_core::data::{validate_id, Dataset, Event, EventKind, Item, SocialEdge, SocialKind, User};
use affinity_core::error::{Error, Result};

/// The data set layouts `import` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// MovieLens 100K folder (`u.data`, `u.item`, `u.genre`, `u.user`).
    MovieLens,
    /// Last.fm HetRec 2011 folder (`user_artists.dat`, `artists.dat`, `user_friends.dat`).
    LastFm,
    /// FilmTrust folder (`ratings.txt`, `trust.txt`).
    FilmTrust,
    /// One line per user: `user item item …` in chronological order.
    Sequence,
}

/// Converts the data set at `input` (a folder, or a file for [`Source::Sequence`]).
pub fn import(source: Source, input: &Path) -> Result<Dataset> {
    match source {
        Source::MovieLens => movielens(input),
        Source::LastFm => lastfm(input),
        Source::FilmTrust => filmtrust(input),
        Source::Sequence => sequence(input),
    }
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Decodes Latin-1 bytes: every byte is the code point of the same value.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

fn row_err(path: &Path, line: usize, message: impl Into<String>) -> Error {
    Error::InvalidRow {
        file: path.display().to_string(),
        line: line as u64,
        message: message.into(),
    }
}

fn id(path: &Path, line: usize, s: &str) -> Result<String> {
    validate_id(s).map_err(|m| row_err(path, line, m))?;
    Ok(s.to_string())
}

fn num<T: std::str::FromStr>(path: &Path, line: usize, s: &str, what: &str) -> Result<T> {
    s.trim()
        .parse()
        .map_err(|_| row_err(path, line, format!("{what}: cannot parse {s:?}")))
}

/// Splits a file into (1-based line number, fields) for non-blank lines.
fn rows<'a>(text: &'a str, sep: &'a str) -> impl Iterator<Item = (usize, Vec<&'a str>)> + 'a {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(move |(i, l)| {
            let fields = if sep == " " {
                l.split_whitespace().collect()
            } else {
                l.split(sep).collect()
            };
            (i + 1, fields)
        })
}

fn need(path: &Path, line: usize, fields: &[&str], n: usize) -> Result<()> {
    if fields.len() < n {
        return Err(row_err(path, line, format!("expected at least {n} fields, found {}", fields.len())));
    }
    Ok(())
}

fn movielens(dir: &Path) -> Result<Dataset> {
    let genre_path = dir.join("u.genre");
    let mut genres: Vec<(usize, String)> = Vec::new();
    for (line, f) in rows(&read_text(&genre_path)?, "|") {
        need(&genre_path, line, &f, 2)?;
        genres.push((num(&genre_path, line, f[1], "genre index")?, f[0].to_string()));
    }
    genres.sort();
    let genre_names: Vec<String> = genres.into_iter().map(|(_, n)| n).collect();

    let item_path = dir.join("u.item");
    let bytes = fs::read(&item_path).map_err(|e| Error::io(&item_path, e))?;
    let text = latin1(&bytes);
    let mut items = Vec::new();
    for (line, f) in rows(&text, "|") {
        need(&item_path, line, &f, 5 + genre_names.len())?;
        let flags = &f[5..5 + genre_names.len()];
        let flagged: Vec<String> = flags
            .iter()
            .zip(&genre_names)
            .filter(|(flag, _)| flag.trim() == "1")
            .map(|(_, g)| g.clone())
            .collect();
        let mut tags = flagged.clone();
        // Release date looks like `01-Jan-1995`; its year becomes a tag.
        if let Some(year) = f[2].rsplit('-').next().filter(|y| y.len() == 4) {
            tags.push(year.to_string());
        }
        items.push(Item {
            item_id: id(&item_path, line, f[0])?,
            title: f[1].to_string(),
            category: flagged.first().cloned().unwrap_or_default(),
            brand: String::new(),
            price: None,
            tags,
            available: true,
            location: None,
            listed_at: None,
        });
    }

    let data_path = dir.join("u.data");
    let mut events = Vec::new();
    for (line, f) in rows(&read_text(&data_path)?, "\t") {
        need(&data_path, line, &f, 4)?;
        events.push(Event {
            user_id: id(&data_path, line, f[0])?,
            item_id: id(&data_path, line, f[1])?,
            kind: EventKind::Rating,
            timestamp: Some(num(&data_path, line, f[3], "timestamp")?),
            value: Some(num(&data_path, line, f[2], "rating")?),
        });
    }

    let user_path = dir.join("u.user");
    let mut users = Vec::new();
    for (line, f) in rows(&read_text(&user_path)?, "|") {
        need(&user_path, line, &f, 5)?;
        let zip = f[4].trim();
        let region = match zip.chars().next() {
            Some(c) if c.is_ascii_digit() => c.to_string(),
            _ => "other".to_string(),
        };
        users.push(User {
            user_id: id(&user_path, line, f[0])?,
            region,
            age: f[1].trim().to_string(),
            gender: f[2].trim().to_string(),
            occupation: f[3].trim().to_string(),
            income: String::new(),
        });
    }
    Ok(Dataset {
        events,
        items,
        users,
        social: Vec::new(),
        memberships: Vec::new(),
    })
}

/// Skips the leading count lines of the HetRec `.dat` copies (single-field lines).
fn data_rows(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    rows(text, "\t").filter(|(_, f)| f.len() > 1)
}

fn lastfm(dir: &Path) -> Result<Dataset> {
    let ua_path = dir.join("user_artists.dat");
    let mut events = Vec::new();
    for (line, f) in data_rows(&read_text(&ua_path)?) {
        need(&ua_path, line, &f, 3)?;
        if line == 1 && f[0].trim() == "userID" {
            continue;
        }
        events.push(Event {
            user_id: id(&ua_path, line, f[0].trim())?,
            item_id: id(&ua_path, line, f[1].trim())?,
            kind: EventKind::View,
            timestamp: None,
            value: Some(num(&ua_path, line, f[2], "weight")?),
        });
    }
    let artists_path = dir.join("artists.dat");
    let mut items = Vec::new();
    if artists_path.exists() {
        for (line, f) in data_rows(&read_text(&artists_path)?) {
            if line == 1 {
                continue; // header: id name url pictureURL
            }
            items.push(Item {
                title: f[1].to_string(),
                ..Item::bare(id(&artists_path, line, f[0].trim())?)
            });
        }
    }
    let friends_path = dir.join("user_friends.dat");
    let mut social = Vec::new();
    if friends_path.exists() {
        for (line, f) in data_rows(&read_text(&friends_path)?) {
            if line == 1 && f[0].trim() == "userID" {
                continue;
            }
            social.push(SocialEdge {
                user_id: id(&friends_path, line, f[0].trim())?,
                other_id: id(&friends_path, line, f[1].trim())?,
                kind: SocialKind::Friend,
                weight: 1.0,
            });
        }
    }
    Ok(Dataset {
        events,
        items,
        users: Vec::new(),
        social,
        memberships: Vec::new(),
    })
}

fn filmtrust(dir: &Path) -> Result<Dataset> {
    let ratings_path = dir.join("ratings.txt");
    let mut events = Vec::new();
    for (line, f) in rows(&read_text(&ratings_path)?, " ") {
        need(&ratings_path, line, &f, 3)?;
        events.push(Event {
            user_id: id(&ratings_path, line, f[0])?,
            item_id: id(&ratings_path, line, f[1])?,
            kind: EventKind::Rating,
            timestamp: None,
            value: Some(num(&ratings_path, line, f[2], "rating")?),
        });
    }
    let trust_path = dir.join("trust.txt");
    let mut social = Vec::new();
    if trust_path.exists() {
        for (line, f) in rows(&read_text(&trust_path)?, " ") {
            need(&trust_path, line, &f, 2)?;
            let weight = match f.get(2) {
                Some(w) => num(&trust_path, line, w, "trust value")?,
                None => 1.0,
            };
            social.push(SocialEdge {
                user_id: id(&trust_path, line, f[0])?,
                other_id: id(&trust_path, line, f[1])?,
                kind: SocialKind::Follow,
                weight,
            });
        }
    }
    Ok(Dataset {
        events,
        items: Vec::new(),
        users: Vec::new(),
        social,
        memberships: Vec::new(),
    })
}

fn sequence(path: &Path) -> Result<Dataset> {
    let mut events = Vec::new();
    for (line, f) in rows(&read_text(path)?, " ") {
        need(path, line, &f, 2)?;
        let user = id(path, line, f[0])?;
        for (pos, item) in f[1..].iter().enumerate() {
            events.push(Event {
                user_id: user.clone(),
                item_id: id(path, line, item)?,
                kind: EventKind::Purchase,
                timestamp: Some(pos as i64 + 1),
                value: None,
            });
        }
    }
    Ok(Dataset {
        events,
        ..Dataset::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_decodes_high_bytes() {
        assert_eq!(latin1(&[0x43, 0xe9]), "Cé");
    }

    #[test]
    fn sequence_positions_are_order_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seq.txt");
        fs::write(&p, "1 10 11 12\n2 11\n").unwrap();
        let d = sequence(&p).unwrap();
        assert_eq!(d.events.len(), 4);
        assert_eq!(d.events[2].timestamp, Some(3));
        assert_eq!(d.events[3].user_id, "2");
        fs::write(&p, "1 10\n2\n").unwrap();
        let err = sequence(&p).unwrap_err().to_string();
        assert!(err.contains(":2:"), "{err}");
    }
}
