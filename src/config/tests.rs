//! Unit tests of the config: defaults, environment overrides and validation.

use super::*;

#[test]
fn defaults_match_the_product_contract() {
    let c = Config::default();
    assert_eq!(c.data_dir, PathBuf::from("./data"));
    assert_eq!(c.http.addr, "127.0.0.1:8080");
    assert_eq!(c.grpc.addr, "127.0.0.1:50051");
    assert_eq!(c.http.max_body_bytes, 1 << 20);
    assert!(c.validate("default").is_empty());
}

#[test]
fn env_overrides() {
    let mut c = Config::default();
    c.apply_env(|k| match k {
        "CORDON_DATA_DIR" => Some("/tmp/x".into()),
        "CORDON_HTTP_ADDR" => Some("127.0.0.1:9".into()),
        "CORDON_GRPC_ADDR" => Some("127.0.0.1:10".into()),
        _ => None,
    });
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.http.addr, "127.0.0.1:9");
    assert_eq!(c.grpc.addr, "127.0.0.1:10");
}

#[test]
fn every_unknown_key_is_reported() {
    let (_, unknown) = Config::parse("cordon.toml", "[http]\naddr = \"127.0.0.1:1\"\nmax_body_byte = 5\n[log]\nformatt = \"json\"\n[[suppressions]]\nid = \"s\"\nreason = \"r\"\nowner = \"o\"\nexpires = \"2030-01-01T00:00:00Z\"\nentity = \"host:a\"\nrul = \"x\"\n").unwrap();
    let text: Vec<String> = unknown.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        text,
        vec![
            "cordon.toml: line 3: http.max_body_byte: unknown field",
            "cordon.toml: line 5: log.formatt: unknown field",
            "cordon.toml: line 12: suppressions.0.rul: unknown field"
        ]
    );
    let err = Config::parse("cordon.toml", "[http]\nmax_body_bytes = \"big\"\n").unwrap_err();
    assert!(err.key.contains("line 2"), "{err}");
}

#[test]
fn every_problem_at_once() {
    let (c, _) = Config::parse(
        "c.toml",
        r#"
        [http]
        addr = "nope"
        [log]
        format = "xml"
        [[suppressions]]
        id = "s"
        reason = "r"
        owner = "o"
        expires = "2030-01-01T00:00:00Z"
        schedule = "not cron"
        "#,
    )
    .unwrap();
    let problems = c.validate("c.toml");
    let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"http.addr"), "{keys:?}");
    assert!(keys.contains(&"log.format"), "{keys:?}");
    assert!(keys.contains(&"suppressions[0].rule"), "{keys:?}");
    assert!(keys.contains(&"suppressions[0].schedule"), "{keys:?}");
    assert!(keys.contains(&"suppressions[0].duration_mins"), "{keys:?}");
}

#[test]
fn checkpoints_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[audit.checkpoints]\ndir = {:?}\nsigning_key = {{ env = \"K\" }}\norigin = \"a b\"\ninterval_secs = 0\nsigning = 1\n",
        dir.path().join("data"),
        dir.path().join("data/../data/cp"),
    );
    let (c, unknown) = Config::parse("c.toml", &text).unwrap();
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(
        unknown[0].key.ends_with("audit.checkpoints.signing"),
        "{unknown:?}"
    );
    let problems = c.validate("c.toml");
    let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "audit.checkpoints.origin",
            "audit.checkpoints.interval_secs",
            "audit.checkpoints.dir"
        ],
        "{problems:?}"
    );
    let text = format!(
        "data_dir = {:?}\n[audit.checkpoints]\ndir = {:?}\nsigning_key = {{ env = \"K\" }}\norigin = \"soc.example/cordon\"\n",
        dir.path().join("data"),
        dir.path().join("checkpoints"),
    );
    let (c, unknown) = Config::parse("c.toml", &text).unwrap();
    assert!(unknown.is_empty() && c.validate("c.toml").is_empty());
    assert_eq!(c.audit.checkpoints.unwrap().interval_secs, 300);
}

#[test]
fn connection_limits_are_bounded() {
    let (c, unknown) = Config::parse(
        "c.toml",
        "[http]\nheader_read_timeout_secs = 0\nidle_timeout_secs = 0\nbody_read_timeout_secs = 0\nmax_connections = 0\n[grpc]\nmax_connections = 0\nkeepalive_interval_secs = 30\nkeepalive_timeout_secs = 10\nidle_timeout_secs = 40\nmax_concurrent_streams = 0\nconcurrency_limit_per_connection = 1000000\n",
    )
    .unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    let problems = c.validate("c.toml");
    let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "http.header_read_timeout_secs",
            "http.idle_timeout_secs",
            "http.body_read_timeout_secs",
            "http.max_connections",
            "grpc.max_connections",
            "grpc.max_concurrent_streams",
            "grpc.concurrency_limit_per_connection",
            "grpc.idle_timeout_secs",
        ],
        "{problems:?}"
    );
}

#[test]
fn a_log_level_the_filter_would_read_as_a_target_is_a_problem() {
    for good in [
        "info",
        "WARN",
        "off",
        "cordon=debug",
        "info,cordon::engine=trace",
        "warn,tower=error",
    ] {
        assert!(validate::log_level(good).is_ok(), "{good}");
    }
    for bad in [
        "verbose",
        "",
        "info,",
        "cordon=loud",
        "inf o",
        "=debug,x",
        "warn, tower=error",
    ] {
        assert!(validate::log_level(bad).is_err(), "{bad:?}");
    }
    let (c, _) = Config::parse("c.toml", "[log]\nlevel = \"verbose\"\n").unwrap();
    let keys: Vec<_> = c.validate("c.toml").into_iter().map(|p| p.key).collect();
    assert_eq!(keys, vec!["log.level".to_string()]);
}

#[test]
fn the_critical_threads_priority_is_a_nice_value() {
    for (value, ok) in [
        (-21, false),
        (-20, true),
        (0, true),
        (19, true),
        (20, false),
    ] {
        let (c, unknown) =
            Config::parse("c.toml", &format!("[store]\ncritical_nice = {value}\n")).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        let problems = c.validate("c.toml");
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        if ok {
            assert!(keys.is_empty(), "{value}: {problems:?}");
        } else {
            assert_eq!(keys, ["store.critical_nice"], "{value}: {problems:?}");
            assert!(problems[0].reason.contains("-20 to 19"), "{problems:?}");
        }
    }
    assert_eq!(Config::default().store.critical_nice, -10);
}
