//! Schedules (`spec.triggers.schedules[]`): when a cron schedule fires, and the event a fire
//! is. Pure functions of the schedule, the last fire and the clock, so the policy is
//! unit-tested here and the component that fires (the leader) only reads, decides and writes.
//!
//! Policy (what the README documents):
//! - cron has five fields, or six with seconds first; it is read in `timezone` (IANA name,
//!   default UTC), so `0 9 * * *` in `Europe/Berlin` follows daylight saving time;
//! - a schedule first seen at `t` fires at its first tick after `t` (no backfill);
//! - a tick missed while nothing could fire (no leader) is not dropped: it fires once, late,
//!   oldest first, with `lateby` (milliseconds) in the event; after a long outage only the
//!   newest [`MAX_CATCH_UP`] missed ticks fire, the first of them carrying in `ticks` how
//!   many it stands for (itself and the older ones skipped);
//! - each fire's event id is derived from the function, the schedule's index and the tick, so
//!   a fire repeated after a failover is the same execution, not a second one.

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::cloudevent::{CloudEvent, CloudEventError, Data, ExtensionValue};
use crate::api::ObjectKey;

/// The type of every schedule's events.
pub const FIRED_TYPE: &str = "lambda.schedule.fired";
/// Extension attribute: how late the fire is, in milliseconds (0 when on time).
pub const LATE_BY_EXTENSION: &str = "lateby";
/// Extension attribute: how many ticks the fire stands for (more than 1 after missed ones).
pub const TICKS_EXTENSION: &str = "ticks";
/// Ticks counted at most when coalescing missed ones (a per-second schedule missed for days
/// is reported as at least this many).
const MAX_COUNTED: u32 = 100_000;

/// Why a schedule cannot be used; each names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron {cron:?}: {message}")]
    Cron { cron: String, message: String },
    #[error("timezone {name:?} is not an IANA time zone name (e.g. UTC, Europe/Berlin)")]
    TimeZone { name: String },
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses `cron` (5 fields, or 6 with seconds first) in `timezone` (default UTC).
    pub fn parse(cron: &str, timezone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let tz = match timezone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| ScheduleError::TimeZone {
                name: name.to_string(),
            })?,
        };
        let cron = cron.parse::<Cron>().map_err(|e| ScheduleError::Cron {
            cron: cron.to_string(),
            message: e.to_string(),
        })?;
        Ok(Schedule { cron, tz })
    }

    /// The first tick strictly after `t`; `None` when the schedule never fires again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Ticks are whole seconds; croner keeps a start's fraction, so it goes first.
        self.cron
            .find_next_occurrence(&t.trunc_subsecs(0).with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

/// What one schedule should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Fire for `tick` now; `ticks` > 1 when missed ticks are coalesced into this one.
    Fire {
        tick: DateTime<Utc>,
        late_by: chrono::Duration,
        ticks: u32,
    },
    /// Nothing is due before `next` (`None`: never again).
    Wait { next: Option<DateTime<Utc>> },
}

/// Missed ticks that fire after an outage at most; older ones are skipped (and counted).
pub const MAX_CATCH_UP: u32 = 60;

/// The decision for a schedule whose last fire (or, never fired, first sighting) was `after`:
/// the oldest tick due, so that calling it again after each fire catches up tick by tick.
pub fn due(schedule: &Schedule, after: DateTime<Utc>, now: DateTime<Utc>) -> Due {
    let Some(first) = schedule.next_after(after).filter(|t| *t <= now) else {
        return Due::Wait {
            next: schedule.next_after(after.max(now)),
        };
    };
    // How many are due, counted up to one past the catch-up bound.
    let (mut last, mut due_count) = (first, 1u32);
    while due_count <= MAX_CATCH_UP {
        match schedule.next_after(last) {
            Some(t) if t <= now => {
                last = t;
                due_count += 1;
            }
            _ => break,
        }
    }
    let on_its_own = Due::Fire {
        tick: first,
        late_by: now - first,
        ticks: 1,
    };
    if due_count <= MAX_CATCH_UP {
        return on_its_own;
    }
    // Too many: the newest MAX_CATCH_UP fire; the first of them stands for the skipped too.
    let Some(start) = newest_window_start(schedule, now) else {
        return on_its_own;
    };
    let mut skipped = 0u32;
    let mut t = first;
    while t < start && skipped < MAX_COUNTED {
        skipped += 1;
        match schedule.next_after(t) {
            Some(n) => t = n,
            None => break,
        }
    }
    Due::Fire {
        tick: start,
        late_by: now - start,
        ticks: skipped.saturating_add(1),
    }
}

/// The oldest of the newest [`MAX_CATCH_UP`] ticks at or before `now`.
fn newest_window_start(schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut t = schedule
        .cron
        .find_previous_occurrence(&now.trunc_subsecs(0).with_timezone(&schedule.tz), true)
        .ok()?;
    for _ in 1..MAX_CATCH_UP {
        t = schedule.cron.find_previous_occurrence(&t, false).ok()?;
    }
    Some(t.with_timezone(&Utc))
}

/// The source of a function's schedule events.
pub fn source(function: &ObjectKey) -> String {
    format!("lambda/schedule/{}/{}", function.namespace, function.name)
}

/// The event of one fire of `spec.triggers.schedules[index]`: id from the index and tick (the
/// same fire is the same event), `time` = the tick, data = the schedule's payload (an empty
/// object without one), `lateby` and `ticks` extensions.
pub fn event(
    function: &ObjectKey,
    index: usize,
    fire: &Due,
    payload: Option<&serde_json::Value>,
) -> Result<Option<CloudEvent>, CloudEventError> {
    let Due::Fire {
        tick,
        late_by,
        ticks,
    } = fire
    else {
        return Ok(None);
    };
    let mut e = CloudEvent::new(
        format!("{index}@{}", tick.timestamp_millis()),
        source(function),
        FIRED_TYPE,
    )?;
    e.time = Some(*tick);
    e.subject = Some(format!("schedules[{index}]"));
    e.datacontenttype = Some("application/json".into());
    e.data = Some(Data::Json(
        payload.cloned().unwrap_or_else(|| serde_json::json!({})),
    ));
    e.extensions.insert(
        LATE_BY_EXTENSION.into(),
        ExtensionValue::Integer(late_by.num_milliseconds().max(0)),
    );
    e.extensions.insert(
        TICKS_EXTENSION.into(),
        ExtensionValue::Integer(i64::from(*ticks)),
    );
    e.set_namespace(&function.namespace)?;
    Ok(Some(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_fields_and_bad_input_name_the_problem() {
        let every_2s = Schedule::parse("*/2 * * * * *", None).expect("seconds");
        assert_eq!(
            every_2s.next_after(t("2026-12-03T10:00:01Z")),
            Some(t("2026-12-03T10:00:02Z"))
        );
        let hourly = Schedule::parse("0 * * * *", None).expect("five");
        assert_eq!(
            hourly.next_after(t("2026-12-03T10:00:00Z")),
            Some(t("2026-12-03T11:00:00Z"))
        );
        let e = Schedule::parse("61 * * * *", None).expect_err("minute 61");
        assert!(e.to_string().contains("cron \"61 * * * *\""), "{e}");
        let e = Schedule::parse("* * * * *", Some("Mars/Olympus")).expect_err("zone");
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
    }

    #[test]
    fn time_zones_follow_daylight_saving_time() {
        let nine = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).expect("parse");
        // Winter: 09:00 CET = 08:00 UTC; summer: 09:00 CEST = 07:00 UTC.
        assert_eq!(
            nine.next_after(t("2026-12-03T00:00:00Z")),
            Some(t("2026-12-03T08:00:00Z"))
        );
        assert_eq!(
            nine.next_after(t("2026-07-01T00:00:00Z")),
            Some(t("2026-07-01T07:00:00Z"))
        );
    }

    #[test]
    fn on_time_fires_once_per_tick_and_waits_in_between() {
        let s = Schedule::parse("*/2 * * * * *", None).expect("parse");
        let first_seen = t("2026-12-03T10:00:00.500Z");
        assert_eq!(
            due(&s, first_seen, t("2026-12-03T10:00:01.900Z")),
            Due::Wait {
                next: Some(t("2026-12-03T10:00:02Z"))
            }
        );
        let fire = due(&s, first_seen, t("2026-12-03T10:00:02.030Z"));
        assert_eq!(
            fire,
            Due::Fire {
                tick: t("2026-12-03T10:00:02Z"),
                late_by: chrono::Duration::milliseconds(30),
                ticks: 1
            }
        );
        // Fired at 10:00:02: the same tick is never due again.
        assert_eq!(
            due(&s, t("2026-12-03T10:00:02Z"), t("2026-12-03T10:00:02.500Z")),
            Due::Wait {
                next: Some(t("2026-12-03T10:00:04Z"))
            }
        );
    }

    #[test]
    fn missed_ticks_each_fire_once_late_oldest_first() {
        let s = Schedule::parse("*/2 * * * * *", None).expect("parse");
        // Last fire 10:00:02; no leader until 10:00:09.2: 04, 06 and 08 were missed.
        let now = t("2026-12-03T10:00:09.200Z");
        let mut after = t("2026-12-03T10:00:02Z");
        let mut fired = Vec::new();
        while let Due::Fire {
            tick,
            late_by,
            ticks,
        } = due(&s, after, now)
        {
            assert_eq!((ticks, late_by), (1, now - tick));
            fired.push(tick);
            after = tick;
        }
        assert_eq!(
            fired,
            [
                t("2026-12-03T10:00:04Z"),
                t("2026-12-03T10:00:06Z"),
                t("2026-12-03T10:00:08Z")
            ]
        );
        assert_eq!(
            due(&s, after, now),
            Due::Wait {
                next: Some(t("2026-12-03T10:00:10Z"))
            }
        );
    }

    #[test]
    fn after_a_long_outage_only_the_newest_ticks_fire_and_the_rest_are_counted() {
        let s = Schedule::parse("* * * * * *", None).expect("parse");
        // A per-second schedule missed for 10 minutes: 600 due, the newest 60 fire.
        let now = t("2026-12-03T10:10:00.250Z");
        match due(&s, t("2026-12-03T10:00:00Z"), now) {
            Due::Fire { tick, ticks, .. } => {
                assert_eq!(tick, t("2026-12-03T10:09:01Z"));
                assert_eq!(ticks, 600 - MAX_CATCH_UP + 1);
            }
            other => panic!("{other:?}"),
        }
        // Missed for two days: still decided at once, the count capped.
        match due(&s, t("2026-12-01T10:00:00Z"), t("2026-12-03T10:00:00.250Z")) {
            Due::Fire { tick, ticks, .. } => {
                assert_eq!(tick, t("2026-12-03T09:59:01Z"));
                assert_eq!(ticks, MAX_COUNTED + 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_fire_is_an_event_with_a_stable_id() {
        let key = ObjectKey::new("alice", "report");
        let fire = Due::Fire {
            tick: t("2026-12-03T10:00:02Z"),
            late_by: chrono::Duration::milliseconds(1200),
            ticks: 3,
        };
        let payload = serde_json::json!({"kind": "daily"});
        let e = event(&key, 1, &fire, Some(&payload))
            .expect("event")
            .expect("a fire");
        assert_eq!(e.source, "lambda/schedule/alice/report");
        assert_eq!(e.type_, FIRED_TYPE);
        assert_eq!(e.time, Some(t("2026-12-03T10:00:02Z")));
        assert_eq!(e.data, Some(Data::Json(payload.clone())));
        assert_eq!(
            e.extensions.get(LATE_BY_EXTENSION),
            Some(&ExtensionValue::Integer(1200))
        );
        assert_eq!(e.namespace(), Some("alice"));
        let again = event(&key, 1, &fire, Some(&payload))
            .expect("event")
            .expect("a fire");
        assert_eq!(
            crate::events::execution::execution_id(&key, &e),
            crate::events::execution::execution_id(&key, &again)
        );
        let other_index = event(&key, 0, &fire, None).expect("event").expect("a fire");
        assert_ne!(e.id, other_index.id);
        assert_eq!(other_index.data, Some(Data::Json(serde_json::json!({}))));
        assert_eq!(
            event(&key, 0, &Due::Wait { next: None }, None).expect("no event"),
            None
        );
    }
}
