//! Enrichment from files: asset inventory, identity context and threat-intel indicators.
//!
//! Owns: the three file formats, loading and re-loading them when they change, and turning an
//! alert's entities into [`EnrichmentReport`]s that say for every fact where it came from and
//! when. A source that fails to (re)load is reported as an enrichment failure — distinct from
//! the detection — and the alert carries on (with the last good data, marked stale).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::{AlertFields, Entity, EntityKind, normalize};
use crate::config::{EnrichmentConfig, Problem, parse_toml_file};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssetsFile {
    #[serde(default)]
    asset: Vec<Asset>,
}

/// One inventory entry: a host or a cloud resource.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Asset {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_resource: Option<String>,
    /// `low`, `medium`, `high` or `critical`.
    pub criticality: String,
    pub environment: String,
    pub owner: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentitiesFile {
    #[serde(default)]
    identity: Vec<Identity>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub user: String,
    pub role: String,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntelFile {
    #[serde(default)]
    indicator: Vec<Indicator>,
}

/// A threat-intel indicator. `type` is an entity kind; `user` marks a known-compromised
/// credential.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Indicator {
    pub value: String,
    #[serde(rename = "type")]
    pub kind: EntityKind,
    /// 0..=100.
    pub confidence: u8,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
}

const CRITICALITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// What enrichment learned about one entity from one source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fact {
    pub entity: Entity,
    /// `assets`, `identities` or `intel`, with the file.
    pub source: String,
    /// When the source data was loaded.
    pub loaded_at: DateTime<Utc>,
    /// The source failed its last reload; this is older data.
    #[serde(default)]
    pub stale: bool,
    pub data: serde_json::Value,
}

/// A source that could not be consulted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Failure {
    pub source: String,
    pub error: String,
}

/// Everything enrichment produced for one alert.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EnrichmentReport {
    pub at: DateTime<Utc>,
    pub facts: Vec<Fact>,
    pub failures: Vec<Failure>,
}

impl EnrichmentReport {
    pub fn asset(&self, entity: &Entity) -> Option<Asset> {
        self.find("assets", entity)
    }

    pub fn identity(&self, entity: &Entity) -> Option<Identity> {
        self.find("identities", entity)
    }

    /// Unexpired intel matching `entity`, highest confidence first.
    pub fn intel(&self, entity: &Entity) -> Vec<Indicator> {
        let mut v: Vec<Indicator> = self
            .facts
            .iter()
            .filter(|f| f.source.starts_with("intel") && &f.entity == entity)
            .filter_map(|f| serde_json::from_value(f.data.clone()).ok())
            .collect();
        v.sort_by_key(|i: &Indicator| std::cmp::Reverse(i.confidence));
        v
    }

    fn find<T: serde::de::DeserializeOwned>(&self, source: &str, entity: &Entity) -> Option<T> {
        self.facts
            .iter()
            .find(|f| f.source.starts_with(source) && &f.entity == entity)
            .and_then(|f| serde_json::from_value(f.data.clone()).ok())
    }
}

/// Why an enrichment file cannot be used: the last good data stays, and every alert reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The file cannot be read or parsed (unknown keys included).
    #[error("{0}")]
    File(Problem),
    /// One entry is invalid: `asset[3].criticality`, `indicator[0].value`, ...
    #[error("{file}: {list}[{index}].{key}: {reason}")]
    Entry {
        file: String,
        list: &'static str,
        index: usize,
        key: &'static str,
        reason: String,
    },
}

impl SourceError {
    fn entry(
        path: &Path,
        list: &'static str,
        index: usize,
        key: &'static str,
        reason: &str,
    ) -> Self {
        SourceError::Entry {
            file: path.display().to_string(),
            list,
            index,
            key,
            reason: reason.to_string(),
        }
    }
}

#[derive(Debug, Default)]
struct Source<T> {
    path: Option<PathBuf>,
    mtime: Option<SystemTime>,
    data: Option<T>,
    loaded_at: Option<DateTime<Utc>>,
    error: Option<SourceError>,
}

#[derive(Debug, Default)]
struct Assets {
    hosts: BTreeMap<String, Asset>,
    cloud: BTreeMap<String, Asset>,
}

type Identities = BTreeMap<String, Identity>;
type Intel = BTreeMap<(EntityKind, String), Vec<Indicator>>;

/// The loaded enrichment sources.
#[derive(Debug, Default)]
pub struct Enricher {
    assets: Source<Assets>,
    identities: Source<Identities>,
    intel: Source<Intel>,
}

impl Enricher {
    /// Loads every configured source; all problems at once (used for start-up validation).
    pub fn load(cfg: &EnrichmentConfig) -> Result<Enricher, Vec<Problem>> {
        let mut e = Enricher {
            assets: Source {
                path: cfg.assets.clone(),
                ..Default::default()
            },
            identities: Source {
                path: cfg.identities.clone(),
                ..Default::default()
            },
            intel: Source {
                path: cfg.intel.clone(),
                ..Default::default()
            },
        };
        e.refresh();
        let problems: Vec<Problem> = [&e.assets.error, &e.identities.error, &e.intel.error]
            .into_iter()
            .flatten()
            .map(|err| Problem::new("enrichment", "", err.to_string()))
            .collect();
        if problems.is_empty() {
            Ok(e)
        } else {
            Err(problems)
        }
    }

    /// Re-reads any source whose file changed. Failures keep the last good data and are
    /// reported on every alert until the file is fixed.
    pub fn refresh(&mut self) {
        refresh(&mut self.assets, load_assets);
        refresh(&mut self.identities, load_identities);
        refresh(&mut self.intel, load_intel);
    }

    /// Enriches the alert's entities at `now` (intel expiry is judged at `now`).
    pub fn enrich(&self, alert: &AlertFields, now: DateTime<Utc>) -> EnrichmentReport {
        let mut report = EnrichmentReport {
            at: now,
            ..Default::default()
        };
        let mut consult =
            |name: &str, path: &Option<PathBuf>, error: &Option<SourceError>| -> bool {
                let Some(path) = path else { return false };
                if let Some(err) = error {
                    report.failures.push(Failure {
                        source: format!("{name}:{}", path.display()),
                        error: err.to_string(),
                    });
                }
                true
            };
        let use_assets = consult("assets", &self.assets.path, &self.assets.error);
        let use_ids = consult("identities", &self.identities.path, &self.identities.error);
        let use_intel = consult("intel", &self.intel.path, &self.intel.error);
        for entity in &alert.entities {
            if use_assets && let Some(assets) = &self.assets.data {
                let hit = match entity.kind {
                    EntityKind::Host => assets.hosts.get(&entity.value),
                    EntityKind::CloudResource => assets.cloud.get(&entity.value),
                    _ => None,
                };
                if let Some(a) = hit {
                    report.facts.push(fact(entity, "assets", &self.assets, a));
                }
            }
            if use_ids
                && entity.kind == EntityKind::User
                && let Some(ids) = &self.identities.data
                && let Some(i) = ids.get(&entity.value)
            {
                report
                    .facts
                    .push(fact(entity, "identities", &self.identities, i));
            }
            if use_intel && let Some(intel) = &self.intel.data {
                for ind in intel
                    .get(&(entity.kind, entity.value.clone()))
                    .into_iter()
                    .flatten()
                {
                    if ind.expires.is_none_or(|x| x > now) {
                        report.facts.push(fact(entity, "intel", &self.intel, ind));
                    }
                }
            }
        }
        report
    }
}

fn fact<T, D: Serialize>(entity: &Entity, name: &str, src: &Source<T>, data: &D) -> Fact {
    Fact {
        entity: entity.clone(),
        source: format!(
            "{name}:{}",
            src.path
                .as_deref()
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default()
        ),
        loaded_at: src.loaded_at.unwrap_or_else(Utc::now),
        stale: src.error.is_some(),
        data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
    }
}

fn refresh<T>(src: &mut Source<T>, load: fn(&Path) -> Result<T, SourceError>) {
    let Some(path) = src.path.clone() else { return };
    let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    if src.data.is_some() && src.error.is_none() && mtime.is_some() && mtime == src.mtime {
        return;
    }
    if src.error.is_some() && mtime.is_some() && mtime == src.mtime {
        return; // Still the same broken file.
    }
    src.mtime = mtime;
    match load(&path) {
        Ok(d) => {
            src.data = Some(d);
            src.loaded_at = Some(Utc::now());
            src.error = None;
        }
        Err(e) => {
            src.error = Some(e);
        }
    }
}

fn load_assets(path: &Path) -> Result<Assets, SourceError> {
    let f: AssetsFile = parse_toml_file(path).map_err(SourceError::File)?;
    let mut out = Assets::default();
    for (i, a) in f.asset.into_iter().enumerate() {
        let at = |k, r: &str| SourceError::entry(path, "asset", i, k, r);
        if !CRITICALITIES.contains(&a.criticality.as_str()) {
            return Err(at("criticality", "must be low, medium, high or critical"));
        }
        match (&a.host, &a.cloud_resource) {
            (Some(h), None) => {
                let h = normalize(EntityKind::Host, h)
                    .ok_or_else(|| at("host", "invalid host name"))?;
                out.hosts.insert(h, a);
            }
            (None, Some(c)) => {
                let c = normalize(EntityKind::CloudResource, c)
                    .ok_or_else(|| at("cloud_resource", "empty"))?;
                out.cloud.insert(c, a);
            }
            _ => return Err(at("host", "set exactly one of host or cloud_resource")),
        }
    }
    Ok(out)
}

fn load_identities(path: &Path) -> Result<Identities, SourceError> {
    let f: IdentitiesFile = parse_toml_file(path).map_err(SourceError::File)?;
    let mut out = Identities::new();
    for (i, id) in f.identity.into_iter().enumerate() {
        let u = normalize(EntityKind::User, &id.user)
            .ok_or_else(|| SourceError::entry(path, "identity", i, "user", "empty"))?;
        out.insert(u, id);
    }
    Ok(out)
}

fn load_intel(path: &Path) -> Result<Intel, SourceError> {
    let f: IntelFile = parse_toml_file(path).map_err(SourceError::File)?;
    let mut out = Intel::new();
    for (i, ind) in f.indicator.into_iter().enumerate() {
        let at = |k, r: &str| SourceError::entry(path, "indicator", i, k, r);
        if ind.confidence > 100 {
            return Err(at("confidence", "must be 0..=100"));
        }
        let v = normalize(ind.kind, &ind.value)
            .ok_or_else(|| at("value", &format!("not a valid {}", ind.kind)))?;
        out.entry((ind.kind, v)).or_default().push(ind);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Rule, Severity};

    fn alert(entities: Vec<Entity>) -> AlertFields {
        AlertFields {
            source_alert_id: "1".into(),
            time: Utc::now(),
            title: "t".into(),
            description: None,
            rule: Rule {
                id: "r".into(),
                name: "r".into(),
                version: None,
            },
            severity: Severity::High,
            confidence: 50,
            techniques: vec![],
            tactics: vec![],
            intel_source: None,
            tags: vec![],
            entities,
            attributes: Default::default(),
            source_url: None,
        }
    }

    #[test]
    fn enriches_and_reports_failures_without_dropping() {
        let dir = tempfile::tempdir().unwrap();
        let assets = dir.path().join("assets.toml");
        let intel = dir.path().join("intel.toml");
        std::fs::write(&assets, "[[asset]]\nhost = \"WS-1\"\ncriticality = \"high\"\nenvironment = \"production\"\nowner = \"it\"\ntags = [\"never-isolate\"]\n").unwrap();
        std::fs::write(&intel, "[[indicator]]\nvalue = \"203.0.113.7\"\ntype = \"ip\"\nconfidence = 90\nsource = \"feed\"\nexpires = \"2099-01-01T00:00:00Z\"\n[[indicator]]\nvalue = \"203.0.113.8\"\ntype = \"ip\"\nconfidence = 95\nsource = \"feed\"\nexpires = \"2001-01-01T00:00:00Z\"\n").unwrap();
        let cfg = EnrichmentConfig {
            assets: Some(assets.clone()),
            identities: None,
            intel: Some(intel),
        };
        let mut e = Enricher::load(&cfg).unwrap();
        let host = Entity::new(EntityKind::Host, "ws-1").unwrap();
        let live = Entity::new(EntityKind::Ip, "203.0.113.7").unwrap();
        let expired = Entity::new(EntityKind::Ip, "203.0.113.8").unwrap();
        let r = e.enrich(
            &alert(vec![host.clone(), live.clone(), expired.clone()]),
            Utc::now(),
        );
        assert_eq!(r.asset(&host).unwrap().tags, vec!["never-isolate"]);
        assert_eq!(r.intel(&live).len(), 1);
        assert!(
            r.intel(&expired).is_empty(),
            "an expired indicator does not match"
        );
        assert!(r.failures.is_empty());

        // Break the file: the next alert still gets the old data, flagged stale, plus a failure.
        std::fs::write(&assets, "[[asset]]\nhost = \"WS-1\"\ncriticality = \"extreme\"\nenvironment = \"p\"\nowner = \"o\"\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&assets)
            .unwrap()
            .set_modified(later)
            .unwrap();
        e.refresh();
        let r = e.enrich(&alert(vec![host.clone()]), Utc::now());
        assert_eq!(r.failures.len(), 1, "{r:?}");
        assert!(r.failures[0].error.contains("criticality"));
        assert!(r.facts[0].stale);
    }

    #[test]
    fn bad_files_fail_validation() {
        let dir = tempfile::tempdir().unwrap();
        let intel = dir.path().join("intel.toml");
        std::fs::write(
            &intel,
            "[[indicator]]\nvalue = \"nope\"\ntype = \"ip\"\nconfidence = 90\nsource = \"f\"\n",
        )
        .unwrap();
        let cfg = EnrichmentConfig {
            intel: Some(intel),
            ..Default::default()
        };
        let err = Enricher::load(&cfg).unwrap_err();
        assert!(
            err[0].to_string().contains("indicator[0].value"),
            "{}",
            err[0]
        );
    }
}
