//! Schedules (`[[schedules]]` in `cordon.toml`): what runs by the clock, and when.
//!
//! Owns: the schedule config (name, cron expression, timezone, kind and the kind's fields), its
//! pure validation (every problem at once, as [`Problem`]s), the compiled [`Schedule`], the
//! next-fire computation (a fire that is due after downtime runs once, however many periods
//! were missed), and the `expires_after_mins` parameter of `block_ioc` steps. Pure: the engine
//! records fires (`engine/schedule.rs`), `schedule/run.rs` delivers what a fire produced.

use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::action::ActionKind;
use crate::config::{ChatConfig, Problem};

pub mod run;

/// Longest IOC block expiry: one year.
pub const MAX_EXPIRY_MINS: u64 = 365 * 24 * 60;
/// The `block_ioc` step parameter that makes a block expire (minutes after it took effect).
pub const EXPIRY_PARAMETER: &str = "expires_after_mins";
/// Missed periods are counted up to this many (for the record); a fire still runs once.
const MAX_COUNTED_MISSES: u64 = 100_000;

/// One `[[schedules]]` entry as written. Fields of other kinds are problems, not ignored.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ScheduleConfig {
    pub name: String,
    /// Seconds-first cron expression (`0 0 8 * * Mon`), as the `cron` crate reads it.
    pub cron: String,
    /// Only `UTC` (fire times are stored and compared in UTC).
    #[serde(default = "utc")]
    pub timezone: String,
    /// `report`, `playbook` or `cti_digest`.
    pub kind: String,
    /// `report`, `cti_digest`: a directory the Markdown (and JSON) is written to.
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    /// `report`, `cti_digest`: a configured chat platform (`slack`, `mattermost`, `teams`)...
    #[serde(default)]
    pub chat: Option<String>,
    /// ...and the channel posted to there.
    #[serde(default)]
    pub channel: Option<String>,
    /// `report`: how many days before the fire the board covers (default 7).
    #[serde(default)]
    pub period_days: Option<u64>,
    /// `playbook`: the playbook run against every target currently contained.
    #[serde(default)]
    pub playbook: Option<String>,
}

fn utc() -> String {
    "UTC".into()
}

/// What a fire does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// The weekly board (`cordon report`) over `period_days`, written and/or posted.
    Report,
    /// A playbook run against the targets currently contained (hosts isolated, indicators
    /// blocked, cloud resources contained, not released).
    Playbook,
    /// The SOC→CTI digest: every alert of an intel-driven rule since the previous fire, with
    /// what the SOC made of it.
    CtiDigest,
}

impl ScheduleKind {
    pub fn parse(s: &str) -> Option<ScheduleKind> {
        match s {
            "report" => Some(ScheduleKind::Report),
            "playbook" => Some(ScheduleKind::Playbook),
            "cti_digest" => Some(ScheduleKind::CtiDigest),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleKind::Report => "report",
            ScheduleKind::Playbook => "playbook",
            ScheduleKind::CtiDigest => "cti_digest",
        }
    }
}

/// Where a report or digest is posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatTarget {
    pub platform: String,
    pub channel: String,
}

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub expr: String,
    cron: cron::Schedule,
    pub kind: ScheduleKind,
    pub output_dir: Option<PathBuf>,
    pub chat: Option<ChatTarget>,
    pub period_days: u64,
    pub playbook: Option<String>,
}

/// What a schedule's stored next fire time means now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Not due yet.
    NotYet,
    /// Due: run once for `due`; `missed` later periods also passed (they are not run);
    /// `next` is the first fire time after now.
    Fire {
        due: DateTime<Utc>,
        missed: u64,
        next: Option<DateTime<Utc>>,
    },
}

impl Schedule {
    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.after(&t).next()
    }

    /// The last fire time strictly before `t`.
    pub fn previous_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.after(&t).next_back()
    }

    /// Whether the fire stored for `next_due` is due at `now`. However many periods passed
    /// while the daemon was down, it runs once; the later ones are counted, not run.
    pub fn due(&self, next_due: DateTime<Utc>, now: DateTime<Utc>) -> Due {
        if next_due > now {
            return Due::NotYet;
        }
        let mut missed = 0;
        for t in self.cron.after(&next_due) {
            if t > now || missed >= MAX_COUNTED_MISSES {
                break;
            }
            missed += 1;
        }
        Due::Fire {
            due: next_due,
            missed,
            next: self.next_after(now),
        }
    }

    /// The window a fire at `due` covers: a report's `period_days` before it; a digest's shift
    /// since the previous fire time.
    pub fn window(&self, due: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        match self.kind {
            ScheduleKind::CtiDigest => (
                self.previous_before(due).unwrap_or(due - Duration::days(1)),
                due,
            ),
            _ => (
                due - Duration::days(i64::try_from(self.period_days).unwrap_or(7)),
                due,
            ),
        }
    }
}

/// Checks every schedule; every problem at once. `chat` says which platforms are configured.
pub fn validate(schedules: &[ScheduleConfig], chat: &ChatConfig, p: &mut impl FnMut(&str, String)) {
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in schedules.iter().enumerate() {
        let key = |k: &str| format!("schedules[{i}].{k}");
        if s.name.trim().is_empty() {
            p(&key("name"), "must not be empty".into());
        } else if !s
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            p(
                &key("name"),
                format!("{:?} may hold only letters, digits, `-` and `_`", s.name),
            );
        }
        if !names.insert(s.name.clone()) {
            p(
                &key("name"),
                format!("duplicate schedule name {:?}", s.name),
            );
        }
        if let Err(e) = cron::Schedule::from_str(&s.cron) {
            p(&key("cron"), format!("not a cron expression: {e}"));
        }
        if s.timezone != "UTC" {
            p(
                &key("timezone"),
                format!("{:?} is not supported; use \"UTC\"", s.timezone),
            );
        }
        let Some(kind) = ScheduleKind::parse(&s.kind) else {
            p(
                &key("kind"),
                format!(
                    "unknown kind {:?} (expected report, playbook or cti_digest)",
                    s.kind
                ),
            );
            continue;
        };
        let delivers = matches!(kind, ScheduleKind::Report | ScheduleKind::CtiDigest);
        let not_for =
            |field: &str| format!("{field} does not apply to a {} schedule", kind.as_str());
        if delivers {
            if s.output_dir.is_none() && s.chat.is_none() {
                p(
                    &key("output_dir"),
                    "set output_dir, chat or both: where the report goes".into(),
                );
            }
            if s.playbook.is_some() {
                p(&key("playbook"), not_for("playbook"));
            }
        } else {
            for (field, set) in [
                ("output_dir", s.output_dir.is_some()),
                ("chat", s.chat.is_some()),
                ("channel", s.channel.is_some()),
            ] {
                if set {
                    p(&key(field), not_for(field));
                }
            }
            if s.playbook.as_deref().is_none_or(|n| n.trim().is_empty()) {
                p(
                    &key("playbook"),
                    "a playbook schedule names its playbook".into(),
                );
            }
        }
        if kind != ScheduleKind::Report && s.period_days.is_some() {
            p(&key("period_days"), not_for("period_days"));
        }
        if s.period_days.is_some_and(|d| !(1..=366).contains(&d)) {
            p(&key("period_days"), "must be between 1 and 366".into());
        }
        match (&s.chat, &s.channel) {
            (Some(platform), channel) => {
                let configured = match platform.as_str() {
                    "slack" => chat.slack.is_some(),
                    "mattermost" => chat.mattermost.is_some(),
                    "teams" => chat.teams.is_some(),
                    _ => false,
                };
                if !configured {
                    p(
                        &key("chat"),
                        format!(
                            "no chat platform {platform:?} is configured (chat.slack, chat.mattermost, chat.teams)"
                        ),
                    );
                }
                if channel.as_deref().is_none_or(|c| c.trim().is_empty()) {
                    p(&key("channel"), "a chat destination needs a channel".into());
                }
            }
            (None, Some(_)) if delivers => p(
                &key("channel"),
                "a channel needs chat (the platform)".into(),
            ),
            _ => {}
        }
    }
}

/// Problems with playbook schedules that name a playbook that is not loaded.
pub fn check_playbooks(
    schedules: &[ScheduleConfig],
    playbooks: &[crate::playbook::Playbook],
    file: &str,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, s) in schedules.iter().enumerate() {
        if let Some(name) = &s.playbook
            && !name.trim().is_empty()
            && !playbooks.iter().any(|pb| &pb.name == name)
        {
            out.push(Problem::new(
                file,
                format!("schedules[{i}].playbook"),
                format!("no playbook {name:?} is loaded"),
            ));
        }
    }
    out
}

/// The valid schedules, compiled (invalid ones were refused by [`validate`] before start).
pub fn compile(schedules: &[ScheduleConfig]) -> Vec<Schedule> {
    schedules
        .iter()
        .filter_map(|s| {
            Some(Schedule {
                name: s.name.clone(),
                expr: s.cron.clone(),
                cron: cron::Schedule::from_str(&s.cron).ok()?,
                kind: ScheduleKind::parse(&s.kind)?,
                output_dir: s.output_dir.clone(),
                chat: match (&s.chat, &s.channel) {
                    (Some(platform), Some(channel)) => Some(ChatTarget {
                        platform: platform.clone(),
                        channel: channel.clone(),
                    }),
                    _ => None,
                },
                period_days: s.period_days.unwrap_or(7),
                playbook: s.playbook.clone(),
            })
        })
        .collect()
}

/// How long after it took effect a block made by a step with these parameters expires, if it
/// does. `Err` says why the parameter is wrong (a playbook load problem).
pub fn block_expiry(
    kind: ActionKind,
    parameters: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<Duration>, String> {
    let Some(v) = parameters.get(EXPIRY_PARAMETER) else {
        return Ok(None);
    };
    if kind != ActionKind::BlockIoc {
        return Err(format!(
            "{EXPIRY_PARAMETER} applies to block_ioc steps only, not {kind}"
        ));
    }
    match v.as_u64() {
        Some(m) if (1..=MAX_EXPIRY_MINS).contains(&m) => Ok(Some(Duration::minutes(m as i64))),
        _ => Err(format!(
            "{EXPIRY_PARAMETER} must be a whole number of minutes between 1 and {MAX_EXPIRY_MINS}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Vec<ScheduleConfig> {
        #[derive(Deserialize)]
        struct F {
            schedules: Vec<ScheduleConfig>,
        }
        toml::from_str::<F>(text).unwrap().schedules
    }

    fn problems(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        validate(&cfg(text), &ChatConfig::default(), &mut |k, r| {
            out.push(format!("{k}: {r}"))
        });
        out
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn every_problem_is_reported() {
        let p = problems(
            r#"
            [[schedules]]
            name = "weekly board"
            cron = "every monday"
            timezone = "Europe/Paris"
            kind = "report"
            playbook = "x"
            period_days = 0
            [[schedules]]
            name = "n"
            cron = "0 0 2 * * *"
            kind = "playbook"
            output_dir = "/tmp"
            [[schedules]]
            name = "n"
            cron = "0 0 2 * * *"
            kind = "digest"
            [[schedules]]
            name = "d"
            cron = "0 0 */8 * * *"
            kind = "cti_digest"
            chat = "slack"
            "#,
        );
        let want = [
            "schedules[0].name: \"weekly board\" may hold only",
            "schedules[0].cron: not a cron expression",
            "schedules[0].timezone: \"Europe/Paris\" is not supported",
            "schedules[0].output_dir: set output_dir, chat or both",
            "schedules[0].playbook: playbook does not apply to a report schedule",
            "schedules[0].period_days: must be between 1 and 366",
            "schedules[1].output_dir: output_dir does not apply to a playbook schedule",
            "schedules[1].playbook: a playbook schedule names its playbook",
            "schedules[2].name: duplicate schedule name \"n\"",
            "schedules[2].kind: unknown kind \"digest\"",
            "schedules[3].chat: no chat platform \"slack\" is configured",
            "schedules[3].channel: a chat destination needs a channel",
        ];
        for w in want {
            assert!(
                p.iter().any(|x| x.starts_with(w)),
                "missing {w:?} in {p:#?}"
            );
        }
        assert_eq!(p.len(), want.len(), "{p:#?}");
    }

    #[test]
    fn a_fire_missed_over_downtime_runs_once() {
        let s = &compile(&cfg(r#"
            [[schedules]]
            name = "weekly"
            cron = "0 0 8 * * Mon"
            kind = "report"
            output_dir = "/tmp"
            "#))[0];
        // Monday 2026-11-02 08:00 was due; the daemon came back on Monday 2026-11-23 09:00.
        let due = at("2026-11-02T08:00:00Z");
        assert_eq!(s.due(due, at("2026-11-02T07:59:59Z")), Due::NotYet);
        assert_eq!(
            s.due(due, at("2026-11-23T09:00:00Z")),
            Due::Fire {
                due,
                missed: 3,
                next: Some(at("2026-11-30T08:00:00Z")),
            }
        );
        assert_eq!(
            s.due(due, due),
            Due::Fire {
                due,
                missed: 0,
                next: Some(at("2026-11-09T08:00:00Z")),
            }
        );
        assert_eq!(
            s.window(due),
            (at("2026-10-26T08:00:00Z"), due),
            "a report covers period_days before its fire"
        );
    }

    #[test]
    fn a_digest_covers_the_shift_since_the_previous_fire() {
        let s = &compile(&cfg(r#"
            [[schedules]]
            name = "shift"
            cron = "0 0 6,14,22 * * *"
            kind = "cti_digest"
            output_dir = "/tmp"
            "#))[0];
        let due = at("2026-12-05T14:00:00Z");
        assert_eq!(s.window(due), (at("2026-12-05T06:00:00Z"), due));
    }

    #[test]
    fn expiry_parameter() {
        let m = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert_eq!(
            block_expiry(
                ActionKind::BlockIoc,
                &m(serde_json::json!({"expires_after_mins": 60}))
            ),
            Ok(Some(Duration::minutes(60)))
        );
        assert_eq!(
            block_expiry(ActionKind::BlockIoc, &m(serde_json::json!({}))),
            Ok(None)
        );
        for bad in [
            serde_json::json!(0),
            serde_json::json!("60"),
            serde_json::json!(-1),
        ] {
            assert!(
                block_expiry(
                    ActionKind::BlockIoc,
                    &m(serde_json::json!({"expires_after_mins": bad}))
                )
                .is_err()
            );
        }
        assert!(
            block_expiry(
                ActionKind::IsolateHost,
                &m(serde_json::json!({"expires_after_mins": 5}))
            )
            .unwrap_err()
            .contains("block_ioc steps only")
        );
    }
}
