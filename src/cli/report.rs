//! `cordon report`: the weekly board from the store, as Markdown or JSON.
//!
//! Owns: the command's flags (`--config`, `--since`, `--until`, `--json`), reading the time
//! bounds, and its exit statuses (64 bad flags or config, 74 store). The board itself is
//! `crate::report`'s.

use std::path::Path;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::config::Config;
use crate::daemon::{EXIT_CONFIG, EXIT_STORE};

/// A time bound: RFC 3339, or a date (midnight UTC).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("{s:?} is neither an RFC 3339 time nor a YYYY-MM-DD date"))
}

/// Prints the board over `[since, until)` (default: the seven days before now) for the store
/// and playbooks `config` names. The daemon must not be running on that store.
pub fn report(config: Option<&Path>, since: Option<&str>, until: Option<&str>, json: bool) -> i32 {
    let until = match until.map(parse_time).transpose() {
        Ok(t) => t.unwrap_or_else(Utc::now),
        Err(e) => {
            eprintln!("cordon report: --until: {e}");
            return EXIT_CONFIG;
        }
    };
    let since = match since.map(parse_time).transpose() {
        Ok(t) => t.unwrap_or(until - Duration::days(7)),
        Err(e) => {
            eprintln!("cordon report: --since: {e}");
            return EXIT_CONFIG;
        }
    };
    if since >= until {
        eprintln!("cordon report: --since must be before --until");
        return EXIT_CONFIG;
    }
    let (cfg, unknown) = match Config::load(config) {
        Ok(c) => c,
        Err(problems) => return super::print_problems(&problems),
    };
    if !unknown.is_empty() {
        return super::print_problems(&unknown);
    }
    let (connectors, problems) = crate::connector::Registry::load(&cfg.connectors_dir);
    if !problems.is_empty() {
        return super::print_problems(&problems);
    }
    let playbooks = match crate::playbook::load_dir(&cfg.playbooks_dir, &connectors) {
        Ok(p) => p,
        Err(problems) => return super::print_problems(&problems),
    };
    let catalog = crate::report::Catalog::from_playbooks(&playbooks);
    if !cfg.data_dir.is_dir() {
        eprintln!(
            "cordon report: no store in {}: the data directory does not exist",
            cfg.data_dir.display()
        );
        return EXIT_STORE;
    }
    let store = match crate::store::Store::open(
        &cfg.data_dir,
        &crate::store::StoreOptions {
            cache_capacity_bytes: cfg.store.cache_capacity_bytes,
            sync_data: cfg.store.sync_data,
            compression: cfg.store.compression,
            ..Default::default()
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            let e = super::in_use(&cfg.data_dir, e);
            eprintln!("cordon report: cannot open the store: {e}");
            return EXIT_STORE;
        }
    };
    let input = match crate::report::Input::read(&store) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("cordon report: cannot read the store: {e}");
            return EXIT_STORE;
        }
    };
    let board = crate::report::board(&input, &catalog, since, until);
    if json {
        match serde_json::to_string_pretty(&board) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("cordon report: {e}");
                return 1;
            }
        }
    } else {
        print!("{}", board.to_markdown());
    }
    0
}
