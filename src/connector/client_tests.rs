//! Unit tests of the connector client: placeholders cannot move the destination, basic auth, redaction, backoff.

use super::*;

const PLAIN: UrlRules<'static> = UrlRules {
    language: FilterLanguage::None,
    reserved: &[],
};

fn render(base: &reqwest::Url, r: &RequestSpec, v: &Vars) -> Result<Rendered, RenderError> {
    super::render(base, PLAIN, r, v)
}

fn req(path: &str) -> RequestSpec {
    RequestSpec {
        method: "GET".into(),
        path: path.into(),
        body: None,
        form: BTreeMap::new(),
        headers: BTreeMap::new(),
    }
}

#[test]
fn placeholder_values_cannot_move_the_destination() {
    let base = reqwest::Url::parse("https://api.vendor.example").unwrap();
    let mut v = Vars::default();
    for evil in [
        "evil.example/x",
        "@evil.example",
        "x?y=1#frag",
        "evil.example:8080",
        "%2e%2e",
    ] {
        v.set("target", evil);
        let r = render(&base, &req("/devices/{target}/isolate"), &v).unwrap();
        assert_eq!(r.url.host_str(), Some("api.vendor.example"), "{evil}");
        assert!(r.url.path().starts_with("/devices/"), "{evil}: {}", r.url);
        assert_eq!(
            r.url.path_segments().unwrap().count(),
            3,
            "{evil}: {}",
            r.url
        );
    }
    for dots in ["..", ".", "%2e%2e"] {
        v.set("target", dots);
        let r = render(&base, &req("/users/{target}/revoke"), &v);
        assert!(
            r.as_ref().map_or(true, |r| r.url.path()
                == format!("/users/{}/revoke", encode_component(dots))),
            "{dots}: {r:?}"
        );
    }
    v.set("target", "../../admin");
    let r = render(&base, &req("/devices/{target}/isolate"), &v).unwrap();
    assert_eq!(r.url.path(), "/devices/..%2F..%2Fadmin/isolate");
    v.set("target", "x' or 1=1");
    assert!(render(&base, &req("/q?f=name eq '{target}'"), &v).is_err());
    v.set("target", "ok");
    assert!(render(&base, &req("/{missing}"), &v).is_err());
}

#[test]
fn basic_auth_base64() {
    assert_eq!(basic_credentials("a@b.c", "tok"), "YUBiLmM6dG9r");
    assert_eq!(basic_credentials("a", "b"), "YTpi");
}

#[test]
fn redaction_cuts_keys_and_values() {
    let mut v =
        json!({"access_token": "abc", "nested": {"msg": "key is s3cr3t-value!"}, "ok": "fine"});
    redact_value(&mut v, &["s3cr3t-value"]);
    assert_eq!(v["access_token"], "**REDACTED**");
    assert_eq!(v["nested"]["msg"], "key is **REDACTED**!");
    assert_eq!(v["ok"], "fine");
}

#[test]
fn backoff_is_bounded_and_honours_the_vendor() {
    let r = RetrySpec {
        base_delay_ms: 100,
        max_delay_ms: 1000,
        ..RetrySpec::default()
    };
    for n in 0..30 {
        assert!(backoff(&r, n, None) <= Duration::from_millis(1000));
    }
    assert!(backoff(&r, 0, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
}
