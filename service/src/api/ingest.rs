//! `IngestEvents`: wire events → checked log records, all or none.

use std::str::FromStr;

use affinity_core::data::{unix_now as now, validate_id, Event, EventKind, TimeKind, MAX_FUTURE_SECONDS};
use affinity_core::recommend::MAX_ID_BYTES;
use affinity_core::Error;
use affinity_eventlog::{Context, LoggedEvent};

use crate::proto;
use crate::status::ApiError;

/// Most events (or catalogue items) one call may carry.
pub const MAX_BATCH: usize = 10_000;

/// Checks a batch and turns it into log records; the first bad event refuses the whole
/// batch, naming its index and field.
pub(crate) fn checked(r: proto::IngestEventsRequest) -> Result<Vec<LoggedEvent>, ApiError> {
    if r.events.len() > MAX_BATCH {
        return Err(Error::invalid_argument("events", format!("at most {MAX_BATCH} events per call, got {}", r.events.len())).into());
    }
    let now = now();
    r.events
        .into_iter()
        .enumerate()
        .map(|(n, e)| {
            let bad = |field: &str, why: String| -> ApiError { Error::invalid_argument("events", format!("events[{n}].{field}: {why}")).into() };
            let id = |field: &str, v: &str| -> Result<(), ApiError> {
                if v.len() > MAX_ID_BYTES {
                    return Err(bad(field, format!("ids are at most {MAX_ID_BYTES} bytes, got {}", v.len())));
                }
                validate_id(v).map_err(|w| bad(field, w))
            };
            id("user_id", &e.user_id)?;
            id("item_id", &e.item_id)?;
            let kind = EventKind::from_str(&e.event).map_err(|w| bad("event", w))?;
            if let Some(t) = e.timestamp {
                if t > now + MAX_FUTURE_SECONDS {
                    return Err(bad("timestamp", format!("{t} is more than a day after the server's clock ({now})")));
                }
                // Earlier than 1973 is no unix time in seconds (milliseconds are too large,
                // positions too small): one would make a retrain read every time as an order.
                if t < TimeKind::UNIX_FLOOR {
                    return Err(bad("timestamp", format!("{t} is not unix seconds (at least {})", TimeKind::UNIX_FLOOR)));
                }
            }
            if let Some(v) = e.value {
                if !v.is_finite() || v < 0.0 {
                    return Err(bad("value", format!("must be finite and not negative, got {v}")));
                }
            }
            if let Some(v) = &e.event_id {
                id("event_id", v)?;
            }
            let context = e.context.unwrap_or_default();
            Ok(LoggedEvent {
                event: Event {
                    value: e.value,
                    ..Event::new(e.user_id, e.item_id, kind, Some(e.timestamp.unwrap_or(now)))
                },
                event_id: e.event_id,
                context: Context {
                    session_id: context.session_id,
                    region: context.region,
                    device: context.device,
                },
            })
        })
        .collect()
}
