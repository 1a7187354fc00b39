//! `SetAvailability` and `UpsertItems`: wire catalogue changes → checked log entries,
//! all or none, the first bad one named by its index and field.

use affinity_core::data::{validate_id, GeoPoint, Item, MAX_FUTURE_SECONDS};
use affinity_core::recommend::MAX_ID_BYTES;
use affinity_core::Error;
use affinity_eventlog::AvailabilityChange;

use super::ingest::MAX_BATCH;
use crate::proto;
use crate::status::ApiError;

/// Most tags one item may carry.
pub const MAX_TAGS: usize = 64;

/// Longest title, in bytes.
pub const MAX_TITLE_BYTES: usize = 4096;

fn check_batch(len: usize) -> Result<(), ApiError> {
    if len > MAX_BATCH {
        return Err(Error::invalid_argument("items", format!("at most {MAX_BATCH} items per call, got {len}")).into());
    }
    Ok(())
}

/// An INVALID_ARGUMENT naming entry `n` of the request's list `list` and its field:
/// `items[3].price: is negative`. Shared by the calls that take lists of entries.
pub(super) fn bad_entry(list: &'static str, n: usize, field: &str, why: impl std::fmt::Display) -> ApiError {
    Error::invalid_argument(list, format!("{list}[{n}].{field}: {why}")).into()
}

/// Checks an id in entry `n` of `list` as ids are checked everywhere.
pub(super) fn check_entry_id(list: &'static str, n: usize, field: &str, id: &str) -> Result<(), ApiError> {
    if id.len() > MAX_ID_BYTES {
        return Err(bad_entry(list, n, field, format!("at most {MAX_ID_BYTES} bytes, got {}", id.len())));
    }
    validate_id(id).map_err(|why| bad_entry(list, n, field, why))
}

fn bad(n: usize, field: &str, why: impl std::fmt::Display) -> ApiError {
    bad_entry("items", n, field, why)
}

fn check_id(n: usize, field: &str, id: &str) -> Result<(), ApiError> {
    check_entry_id("items", n, field, id)
}

/// Checks availability changes and turns them into log entries.
pub(crate) fn checked_availability(r: proto::SetAvailabilityRequest) -> Result<Vec<AvailabilityChange>, ApiError> {
    check_batch(r.items.len())?;
    r.items
        .into_iter()
        .enumerate()
        .map(|(n, it)| {
            check_id(n, "item_id", &it.item_id)?;
            Ok(AvailabilityChange {
                item_id: it.item_id,
                available: it.available,
            })
        })
        .collect()
}

/// An upserted entry before its availability is settled: `None` keeps what the item has.
pub(crate) struct Upsert {
    pub(crate) item: Item,
    pub(crate) available: Option<bool>,
}

/// Checks catalogue entries: ids as everywhere, a category usable as a filter, a price
/// that is finite and not negative, bounded tags and title.
pub(crate) fn checked_items(r: proto::UpsertItemsRequest) -> Result<Vec<Upsert>, ApiError> {
    check_batch(r.items.len())?;
    r.items
        .into_iter()
        .enumerate()
        .map(|(n, it)| {
            check_id(n, "item_id", &it.item_id)?;
            for (field, v) in [("category", &it.category), ("brand", &it.brand)] {
                if v.len() > MAX_ID_BYTES {
                    return Err(bad(n, field, format!("at most {MAX_ID_BYTES} bytes, got {}", v.len())));
                }
            }
            if it.title.len() > MAX_TITLE_BYTES {
                return Err(bad(n, "title", format!("at most {MAX_TITLE_BYTES} bytes, got {}", it.title.len())));
            }
            if let Some(p) = it.price {
                if !p.is_finite() || p < 0.0 {
                    return Err(bad(n, "price", format!("must be finite and not negative, got {p}")));
                }
            }
            if it.tags.len() > MAX_TAGS {
                return Err(bad(n, "tags", format!("at most {MAX_TAGS} tags, got {}", it.tags.len())));
            }
            for (t, tag) in it.tags.iter().enumerate() {
                if tag.is_empty() || tag.len() > MAX_ID_BYTES {
                    return Err(bad(n, &format!("tags[{t}]"), format!("must be 1 to {MAX_ID_BYTES} bytes, got {}", tag.len())));
                }
            }
            let location = match (it.latitude, it.longitude) {
                (None, None) => None,
                (Some(lat), Some(lon)) => {
                    GeoPoint::check_latitude(lat).map_err(|e| bad(n, "latitude", e))?;
                    GeoPoint::check_longitude(lon).map_err(|e| bad(n, "longitude", e))?;
                    Some(GeoPoint { lat, lon })
                }
                (Some(_), None) => return Err(bad(n, "longitude", "must be set with latitude")),
                (None, Some(_)) => return Err(bad(n, "latitude", "must be set with longitude")),
            };
            if let Some(t) = it.listed_at {
                let latest = affinity_core::data::unix_now() + MAX_FUTURE_SECONDS;
                if !(0..=latest).contains(&t) {
                    return Err(bad(n, "listed_at", format!("must be unix seconds from 0 to at most a day ahead of the server's clock, got {t}")));
                }
            }
            Ok(Upsert {
                item: Item {
                    item_id: it.item_id,
                    title: it.title,
                    category: it.category,
                    brand: it.brand,
                    price: it.price,
                    tags: it.tags,
                    available: it.available.unwrap_or(true),
                    location,
                    listed_at: it.listed_at,
                },
                available: it.available,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> proto::CatalogueItem {
        proto::CatalogueItem { item_id: id.into(), ..Default::default() }
    }

    #[test]
    fn a_bad_entry_is_named_by_index_and_field() {
        let cases = [
            (item(""), "items[1].item_id"),
            (proto::CatalogueItem { price: Some(f32::NAN), ..item("x") }, "items[1].price"),
            (proto::CatalogueItem { price: Some(-1.0), ..item("x") }, "items[1].price"),
            (proto::CatalogueItem { latitude: Some(95.0), longitude: Some(0.0), ..item("x") }, "items[1].latitude"),
            (proto::CatalogueItem { latitude: Some(5.0), ..item("x") }, "items[1].longitude"),
            (proto::CatalogueItem { listed_at: Some(i64::MIN), ..item("x") }, "items[1].listed_at"),
            (proto::CatalogueItem { listed_at: Some(32_503_680_000), ..item("x") }, "items[1].listed_at"),
            (proto::CatalogueItem { category: "c".repeat(MAX_ID_BYTES + 1), ..item("x") }, "items[1].category"),
            (proto::CatalogueItem { tags: vec!["ok".into(), String::new()], ..item("x") }, "items[1].tags[1]"),
            (proto::CatalogueItem { tags: vec!["t".into(); MAX_TAGS + 1], ..item("x") }, "items[1].tags"),
            (proto::CatalogueItem { title: "t".repeat(MAX_TITLE_BYTES + 1), ..item("x") }, "items[1].title"),
        ];
        for (bad, field) in cases {
            let r = proto::UpsertItemsRequest { items: vec![item("fine"), bad] };
            let e = checked_items(r).err().map(|e| tonic::Status::from(e).message().to_string()).unwrap_or_default();
            assert!(e.contains(field), "{field}: {e}");
        }
        let ok = checked_items(proto::UpsertItemsRequest { items: vec![proto::CatalogueItem { price: Some(3.0), ..item("a") }] }).ok().unwrap_or_default();
        assert_eq!((ok.len(), ok[0].item.price, ok[0].available), (1, Some(3.0), None));
    }
}
