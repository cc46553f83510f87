//! Suppression: maintenance windows and known exceptions from config.
//!
//! Owns: deciding whether a [`Suppression`] applies to an alert at a time. Pure.

use chrono::{DateTime, Duration, Utc};

use crate::alert::AlertFields;
use crate::config::{Suppression, parse_entity_ref};

/// The first suppression that applies to `alert`, judged at the alert's own time (activity
/// inside a maintenance window is expected even if the SIEM reports it late) and, for expiry,
/// at `now`.
pub fn find<'a>(
    rules: &'a [Suppression],
    alert: &AlertFields,
    now: DateTime<Utc>,
) -> Option<&'a Suppression> {
    rules.iter().find(|s| applies(s, alert, now))
}

pub fn applies(s: &Suppression, alert: &AlertFields, now: DateTime<Utc>) -> bool {
    if now >= s.expires {
        return false;
    }
    if let Some(rule) = &s.rule
        && *rule != alert.rule.id
    {
        return false;
    }
    if let Some(entity) = &s.entity {
        match parse_entity_ref(entity) {
            Some(e) if alert.entities.contains(&e) => {}
            _ => return false,
        }
    }
    let t = alert.time;
    if let (Some(start), Some(end)) = (s.start, s.end)
        && !(start <= t && t < end)
    {
        return false;
    }
    if let (Some(expr), Some(mins)) = (&s.schedule, s.duration_mins) {
        let Ok(schedule) = expr.parse::<cron::Schedule>() else {
            return false;
        };
        // Out-of-range arithmetic (absurd alert times, huge durations) means "not inside a
        // window", never a panic.
        let Some(len) = i64::try_from(mins).ok().and_then(Duration::try_minutes) else {
            return false;
        };
        // Active when a window started within the last `len` (inclusive of the start instant).
        let Some(from) = t
            .checked_sub_signed(len)
            .and_then(|f| f.checked_sub_signed(Duration::seconds(1)))
        else {
            return false;
        };
        match schedule.after(&from).next() {
            Some(window_start) if window_start <= t => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Entity, EntityKind, Rule, Severity};

    fn alert(t: &str) -> AlertFields {
        AlertFields {
            source_alert_id: "1".into(),
            time: t.parse().unwrap(),
            title: "t".into(),
            description: None,
            rule: Rule {
                id: "r1".into(),
                name: "r".into(),
                version: None,
            },
            severity: Severity::High,
            confidence: 50,
            techniques: vec![],
            tactics: vec![],
            intel_source: None,
            tags: vec![],
            entities: vec![Entity::new(EntityKind::Host, "ws-1").unwrap()],
            attributes: Default::default(),
            source_url: None,
        }
    }

    fn sup() -> Suppression {
        Suppression {
            id: "s".into(),
            reason: "patching".into(),
            owner: "it".into(),
            rule: None,
            entity: Some("host:WS-1".into()),
            start: None,
            end: None,
            schedule: None,
            duration_mins: None,
            expires: "2030-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn exception_by_entity_and_rule() {
        let now = "2026-11-22T10:00:00Z".parse().unwrap();
        assert!(applies(&sup(), &alert("2026-11-22T09:00:00Z"), now));
        let mut s = sup();
        s.rule = Some("other".into());
        assert!(!applies(&s, &alert("2026-11-22T09:00:00Z"), now));
        let mut s = sup();
        s.entity = Some("host:ws-2".into());
        assert!(!applies(&s, &alert("2026-11-22T09:00:00Z"), now));
    }

    #[test]
    fn expired_suppression_does_not_apply() {
        let mut s = sup();
        s.expires = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(!applies(
            &s,
            &alert("2025-12-31T00:00:00Z"),
            "2026-11-22T10:00:00Z".parse().unwrap()
        ));
    }

    #[test]
    fn one_off_and_recurring_windows() {
        let now = "2026-11-22T10:00:00Z".parse().unwrap();
        let mut s = sup();
        s.start = Some("2026-11-22T08:00:00Z".parse().unwrap());
        s.end = Some("2026-11-22T09:00:00Z".parse().unwrap());
        assert!(applies(&s, &alert("2026-11-22T08:30:00Z"), now));
        assert!(!applies(&s, &alert("2026-11-22T09:00:00Z"), now));
        // Sundays 02:00 UTC for two hours. 2026-11-22 is a Sunday.
        let mut s = sup();
        s.schedule = Some("0 0 2 * * Sun".into());
        s.duration_mins = Some(120);
        assert!(applies(&s, &alert("2026-11-22T02:00:00Z"), now));
        assert!(applies(&s, &alert("2026-11-22T03:59:00Z"), now));
        assert!(!applies(&s, &alert("2026-11-22T04:01:00Z"), now));
        assert!(!applies(&s, &alert("2026-11-21T02:30:00Z"), now));
        // An alert time at the edge of the representable range does not panic.
        let mut a = alert("2026-11-22T02:00:00Z");
        a.time = chrono::DateTime::<Utc>::MIN_UTC;
        assert!(!applies(&s, &a, now));
    }
}
