//! The sidecar (`mycosynth sidecar`) over real HTTP against real nats-server and validator
//! processes: the runtime API, the change stream, OFREP, health, and bad input; on the secure
//! config in [`secure`].

use std::time::Duration;

use mycosynth_testkit::sidecar::{
    http, stalled_client, write_schema, SidecarProcess, Sse, SseClient,
};
use mycosynth_testkit::{NatsServer, Proxy, Validator};
use serde_json::json;

use crate::{api, run_cli, set_keys, stderr};

mod secure;

const WAIT: Duration = Duration::from_secs(10);

async fn cli_ok(url: &str, args: &[&str]) {
    let out = run_cli(url, args).await;
    assert!(out.status.success(), "mycosynth {args:?}: {}", stderr(&out));
}

/// `shop` in `base` and `prod` (prod inherits from base), with a schema default.
async fn shop(url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = json!({
        "type": "object",
        "properties": {
            "http.timeout_ms": {"type": "integer", "default": 250},
            "database.pool_size": {"type": "integer", "minimum": 1},
        }
    });
    cli_ok(
        url,
        &["schema", "push", "shop", &write_schema(dir.path(), &schema)],
    )
    .await;
    let api = api(url).await;
    set_keys(&api, "shop", "base", &[("http.retries", json!(3))]).await;
    cli_ok(url, &["parent", "shop", "prod", "base"]).await;
    set_keys(&api, "shop", "prod", &[("database.pool_size", json!(50))]).await;
    set_keys(&api, "shop", "prod", &[("feature.dark_mode", json!(true))]).await;
    dir
}

#[tokio::test]
async fn runtime_endpoints_serve_values_with_their_source_and_answer_304() {
    let nats = NatsServer::start();
    let url = nats.url();
    let _validator = Validator::start(&url, &[]);
    let _dir = shop(&url).await;
    let sidecar = SidecarProcess::serving(&url, "shop", "prod", &[]);

    let all = sidecar.get("/v1/config/shop/prod");
    assert_eq!(all.status, 200, "{}", all.body);
    // Own version 2, the parent's 1: a parent's change must move the ETag too.
    assert_eq!(all.header("etag"), Some("\"2.1\""));
    assert_eq!(
        all.json(),
        json!({"namespace": "shop", "environment": "prod", "version": 2, "revision": "2.1", "values": {
            "database.pool_size": 50, "feature.dark_mode": true, "http.retries": 3, "http.timeout_ms": 250,
        }})
    );
    let unchanged = sidecar.get_with("/v1/config/shop/prod", &[("If-None-Match", "\"2.1\"")]);
    assert_eq!((unchanged.status, unchanged.body.as_str()), (304, ""));

    let own = sidecar
        .get("/v1/config/shop/prod/database.pool_size")
        .json();
    assert_eq!(
        own,
        json!({"key": "database.pool_size", "value": 50, "source": "own", "version": 2})
    );
    let inherited = sidecar.get("/v1/config/shop/prod/http.retries").json();
    assert_eq!(
        (&inherited["source"], &inherited["inherited_from"]),
        (&json!("inherited"), &json!("base"))
    );
    let defaulted = sidecar.get("/v1/config/shop/prod/http.timeout_ms").json();
    assert_eq!(
        (&defaulted["value"], &defaulted["source"]),
        (&json!(250), &json!("default"))
    );
    let key_304 = sidecar.get_with(
        "/v1/config/shop/prod/http.retries",
        &[("If-None-Match", "W/\"2.1\"")],
    );
    assert_eq!(key_304.status, 304);

    // The parent changes: same own version, new revision, so the old ETag no longer matches.
    set_keys(
        &api(&url).await,
        "shop",
        "base",
        &[("http.retries", json!(5))],
    )
    .await;
    let moved = wait_for_etag(&sidecar, "/v1/config/shop/prod", "\"2.2\"");
    assert_eq!(moved.json()["values"]["http.retries"], json!(5));
    let stale = sidecar.get_with("/v1/config/shop/prod", &[("If-None-Match", "\"2.1\"")]);
    assert_eq!(stale.status, 200);

    let unknown = sidecar.get("/v1/config/shop/prod/database.host");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["key"], json!("database.host"));
    assert!(unknown.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("database.host")));

    let other = sidecar.get("/v1/config/billing/prod");
    assert_eq!(other.status, 404, "a namespace not served: {}", other.body);
    assert!(
        other.body.contains("serves shop/prod, not billing/prod"),
        "{}",
        other.body
    );
    assert_eq!(
        sidecar.get("/v1/config/shop/staging/http.retries").status,
        404
    );
    assert_eq!(sidecar.get("/v1/watch/billing/prod").status, 404);

    let served = sidecar.get("/v1/config").json();
    assert_eq!(
        (&served["namespace"], &served["watch"]),
        (&json!("shop"), &json!("/v1/watch/shop/prod"))
    );

    // Requests are counted by route and status class: the 304 above, the 404s of keys.
    let route = "route=\"/v1/config/{namespace}/{environment}";
    assert!(
        sidecar.metric(
            "mycosynth_sidecar_requests_total",
            &format!("{route}\",status=\"3xx\"")
        ) >= 1.0
    );
    let key_route = format!("{route}/{{key}}\",status=\"4xx\"");
    assert!(sidecar.metric("mycosynth_sidecar_requests_total", &key_route) >= 2.0);
}

fn wait_for_etag(
    sidecar: &SidecarProcess,
    path: &str,
    etag: &str,
) -> mycosynth_testkit::sidecar::HttpReply {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let reply = sidecar.get(path);
        if reply.header("etag") == Some(etag) {
            return reply;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reached {etag}: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn health_is_503_until_the_first_snapshot_then_names_its_origin() {
    let nats = NatsServer::start();
    let url = nats.url();
    let _validator = Validator::start(&url, &[]);
    set_keys(
        &api(&url).await,
        "shop",
        "prod",
        &[("limits.max_items", json!(20))],
    )
    .await;
    let proxy = Proxy::start(nats.port());
    proxy.cut();
    let cache = tempfile::tempdir().expect("cache dir");
    let cache_dir = cache.path().display().to_string();
    let mut sidecar =
        SidecarProcess::start(&proxy.url(), "shop", "prod", &["--cache-dir", &cache_dir]);

    let starting = sidecar.get("/health");
    assert_eq!(
        (starting.status, &starting.json()["status"]),
        (503, &json!("starting"))
    );
    let config = sidecar.get("/v1/config/shop/prod");
    assert_eq!(
        (config.status, config.header("retry-after")),
        (503, Some("1"))
    );
    assert_eq!(config.json()["kind"], json!("unavailable"));

    proxy.restore();
    sidecar.wait_serving(Duration::from_secs(30));
    let health = sidecar.get("/health").json();
    assert_eq!(
        (&health["origin"], &health["connected"], &health["version"]),
        (&json!("nats"), &json!(true), &json!(1))
    );
    assert!(health["staleness_ms"].as_u64().is_some());

    // Without NATS, the restarted sidecar serves its last-known-good cache at once (once the
    // first one is written: the subscriber writes it off the updater's path).
    let deadline = std::time::Instant::now() + WAIT;
    while sidecar.metric("mycosynth_subscriber_cache_writes_total", "") < 1.0 {
        assert!(std::time::Instant::now() < deadline, "no cache written");
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.cut();
    sidecar.restart();
    sidecar.wait_serving(WAIT);
    let health = sidecar.get("/health").json();
    assert_eq!(
        (&health["origin"], &health["connected"]),
        (&json!("cache"), &json!(false))
    );
    assert_eq!(
        sidecar.get("/v1/config/shop/prod/limits.max_items").json()["value"],
        json!(20)
    );
}

#[tokio::test]
async fn the_change_stream_sends_each_change_heartbeats_and_resumes_from_last_event_id() {
    let nats = NatsServer::start();
    let url = nats.url();
    let _validator = Validator::start(&url, &[]);
    let api = api(&url).await;
    set_keys(
        &api,
        "shop",
        "prod",
        &[
            ("limits.max_items", json!(20)),
            ("feature.dark_mode", json!(true)),
        ],
    )
    .await;
    let sidecar = SidecarProcess::serving(&url, "shop", "prod", &["--heartbeat", "0.2"]);
    let addr = sidecar.addr();

    let fresh = SseClient::connect(&addr, "/v1/watch/shop/prod", &[]);
    assert_eq!(fresh.status, 200);
    let state = fresh.next_event(WAIT).expect("the state first");
    assert!(
        matches!(&state, Sse::Event { id, event, .. } if id == "1" && event == "state"),
        "{state:?}"
    );
    assert_eq!(
        state.json()["values"],
        json!({"limits.max_items": 20, "feature.dark_mode": true})
    );

    let ofrep = SseClient::connect(
        &addr,
        "/v1/watch/shop/prod?format=ofrep",
        &[("Last-Event-ID", "1")],
    );
    cli_ok(
        &url,
        &[
            "set",
            "shop",
            "prod",
            "limits.max_items",
            "30",
            "--reason",
            "more room",
        ],
    )
    .await;
    let change = fresh.next_event(WAIT).expect("the change");
    let Sse::Event { id, event, .. } = &change else {
        unreachable!()
    };
    assert_eq!((id.as_str(), event.as_str()), ("2", "change"));
    let body = change.json();
    assert_eq!(
        (&body["version"], &body["previous_version"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(
        (&body["keys"], &body["values"]),
        (
            &json!(["limits.max_items"]),
            &json!({"limits.max_items": 30})
        )
    );
    assert_eq!(
        (&body["author"], &body["reason"], &body["cause"]),
        (
            &json!("test-operator"),
            &json!("more room"),
            &json!("event")
        )
    );
    let notice = ofrep.next_event(WAIT).expect("OFREP's notification");
    assert!(
        matches!(&notice, Sse::Event { id, event, .. } if id == "2" && event == "message"),
        "{notice:?}"
    );
    assert_eq!(
        (&notice.json()["type"], &notice.json()["etag"]),
        (&json!("refetchEvaluation"), &json!("\"2\""))
    );

    let beat = (0..20).find_map(|_| match fresh.next(WAIT) {
        Some(Sse::Comment(text)) => Some(text),
        _ => None,
    });
    assert_eq!(beat.as_deref(), Some("heartbeat"));

    // At the current id: nothing until the next change. Behind: the state first.
    let current = SseClient::connect(&addr, "/v1/watch/shop/prod", &[("Last-Event-ID", "2")]);
    let behind = SseClient::connect(&addr, "/v1/watch/shop/prod", &[("Last-Event-ID", "1")]);
    let caught_up = behind
        .next_event(WAIT)
        .expect("state for the client behind");
    assert!(matches!(&caught_up, Sse::Event { id, event, .. } if id == "2" && event == "state"));
    assert_eq!(caught_up.json()["values"]["limits.max_items"], json!(30));
    cli_ok(&url, &["delete", "shop", "prod", "feature.dark_mode"]).await;
    for client in [&current, &behind, &fresh] {
        let next = client.next_event(WAIT).expect("the deletion");
        assert!(
            matches!(&next, Sse::Event { id, event, .. } if id == "3" && event == "change"),
            "{next:?}"
        );
        assert_eq!(
            (&next.json()["deleted"], &next.json()["values"]),
            (&json!(["feature.dark_mode"]), &json!({}))
        );
    }

    assert_eq!(
        http(&addr, "GET", "/v1/watch/shop/prod?format=xml", &[], None).status,
        400
    );
}

#[tokio::test]
async fn ofrep_evaluates_flags_and_answers_304_on_bulk() {
    let nats = NatsServer::start();
    let url = nats.url();
    let _validator = Validator::start(&url, &[]);
    let api = api(&url).await;
    set_keys(
        &api,
        "shop",
        "prod",
        &[
            ("feature.dark_mode", json!(true)),
            ("limits.max_items", json!(20)),
        ],
    )
    .await;
    let sidecar = SidecarProcess::serving(&url, "shop", "prod", &[]);
    let json_type = Some("application/json");

    let flag = sidecar.post(
        "/ofrep/v1/evaluate/flags/feature.dark_mode",
        json_type,
        br#"{"context":{"targetingKey":"u-1"}}"#,
    );
    assert_eq!(flag.status, 200, "{}", flag.body);
    assert_eq!(
        flag.json(),
        json!({"key": "feature.dark_mode", "value": true, "reason": "STATIC", "variant": "1", "metadata": {"source": "own", "version": 1}})
    );
    let missing = sidecar.post("/ofrep/v1/evaluate/flags/feature.nothing", json_type, b"{}");
    assert_eq!(missing.status, 404);
    assert_eq!(
        (&missing.json()["key"], &missing.json()["errorCode"]),
        (&json!("feature.nothing"), &json!("FLAG_NOT_FOUND"))
    );

    let bulk = sidecar.post(
        "/ofrep/v1/evaluate/flags",
        json_type,
        br#"{"context":{"targetingKey":"u-1"}}"#,
    );
    assert_eq!((bulk.status, bulk.header("etag")), (200, Some("\"1\"")));
    let body = bulk.json();
    assert_eq!(body["flags"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        body["eventStreams"],
        json!([{"type": "sse", "endpoint": {"requestUri": "/v1/watch/shop/prod?format=ofrep"}}])
    );
    let unchanged = http(
        &sidecar.addr(),
        "POST",
        "/ofrep/v1/evaluate/flags",
        &[
            ("Content-Type", "application/json"),
            ("If-None-Match", "\"1\""),
        ],
        Some(b"{}"),
    );
    assert_eq!((unchanged.status, unchanged.body.as_str()), (304, ""));

    set_keys(&api, "shop", "prod", &[("limits.max_items", json!(25))]).await;
    wait_for_etag(&sidecar, "/v1/config/shop/prod", "\"2\"");
    let changed = http(
        &sidecar.addr(),
        "POST",
        "/ofrep/v1/evaluate/flags?flagConfigEtag=%222%22",
        &[
            ("Content-Type", "application/json"),
            ("If-None-Match", "\"1\""),
        ],
        Some(b"{}"),
    );
    assert_eq!(
        (changed.status, changed.header("etag")),
        (200, Some("\"2\""))
    );
    assert!(changed.body.contains(r#""value":25"#), "{}", changed.body);
}

type BadBody = (
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
);

#[tokio::test]
async fn bad_input_gets_a_clear_json_error_and_changes_nothing() {
    let nats = NatsServer::start();
    let url = nats.url();
    let _validator = Validator::start(&url, &[]);
    set_keys(
        &api(&url).await,
        "shop",
        "prod",
        &[("limits.max_items", json!(20))],
    )
    .await;
    let sidecar = SidecarProcess::serving(&url, "shop", "prod", &["--max-body", "1024"]);
    let flag = "/ofrep/v1/evaluate/flags/limits.max_items";
    // (what, content type, body, status, OFREP error code)
    let cases: [BadBody; 5] = [
        (
            "malformed JSON",
            Some("application/json"),
            b"{\"context\":".to_vec(),
            400,
            "PARSE_ERROR",
        ),
        (
            "wrong content type",
            Some("text/plain"),
            b"{}".to_vec(),
            400,
            "PARSE_ERROR",
        ),
        ("no content type", None, b"{}".to_vec(), 400, "PARSE_ERROR"),
        (
            "context not an object",
            Some("application/json"),
            br#"{"context":[1]}"#.to_vec(),
            400,
            "INVALID_CONTEXT",
        ),
        (
            "oversized",
            Some("application/json"),
            vec![b' '; 4096],
            413,
            "GENERAL",
        ),
    ];
    for (what, content_type, body, status, code) in cases {
        for path in [flag, "/ofrep/v1/evaluate/flags"] {
            let reply = sidecar.post(path, content_type, &body);
            assert_eq!(reply.status, status, "{what} on {path}: {}", reply.body);
            assert_eq!(
                reply.json()["errorCode"],
                json!(code),
                "{what}: {}",
                reply.body
            );
            assert!(
                reply.json()["errorDetails"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{what}"
            );
        }
    }

    for path in [
        "/v1/config/shop/prod/limits..max",
        "/v1/config/shop/prod/a%20b",
        "/v1/config/shop/prod/_meta.head",
    ] {
        let reply = sidecar.get(path);
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert!(
            reply.json()["rule"].is_string()
                && reply.json()["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("key")),
            "{path}: {}",
            reply.body
        );
    }
    let bad_flag = sidecar.post(
        "/ofrep/v1/evaluate/flags/a%20b",
        Some("application/json"),
        b"{}",
    );
    assert_eq!(
        (bad_flag.status, &bad_flag.json()["key"]),
        (400, &json!("a b"))
    );
    assert!(
        bad_flag.body.contains("dot-separated segments"),
        "{}",
        bad_flag.body
    );
    let bad_namespace = sidecar.get("/v1/config/Shop_1/prod");
    assert_eq!(
        (bad_namespace.status, &bad_namespace.json()["rule"]),
        (400, &json!("charset"))
    );

    let rebinding = sidecar.get_with("/v1/config/shop/prod", &[("Host", "attacker.example:8686")]);
    assert_eq!(rebinding.status, 421, "{}", rebinding.body);
    assert_eq!(
        sidecar.get("/v2/nothing").json()["kind"],
        json!("not_found")
    );
    assert_eq!(
        http(&sidecar.addr(), "DELETE", "/v1/config/shop/prod", &[], None).status,
        405
    );

    // Nothing changed and nothing fell over.
    let after = sidecar.get("/v1/config/shop/prod");
    assert_eq!((after.status, &after.json()["version"]), (200, &json!(1)));
    assert!(sidecar.metric("mycosynth_sidecar_errors_total", "kind=\"bad_request\"") >= 10.0);
}

#[tokio::test]
async fn a_slow_stream_client_is_dropped_and_delays_neither_others_nor_updates() {
    let nats = NatsServer::start();
    let url = nats.url();
    let _validator = Validator::start(&url, &[]);
    let api = api(&url).await;
    set_keys(&api, "shop", "prod", &[("blob", json!("x"))]).await;
    let sidecar = SidecarProcess::serving(&url, "shop", "prod", &["--client-queue", "4"]);
    let addr = sidecar.addr();
    let fast = SseClient::connect(&addr, "/v1/watch/shop/prod", &[]);
    assert!(fast.next_event(WAIT).is_some(), "the fast client's state");
    let _slow = stalled_client(&addr, "/v1/watch/shop/prod");
    let gone = SseClient::connect(&addr, "/v1/watch/shop/prod", &[]);
    gone.close();

    // Large values fill the stalled client's socket buffers, then its queue of 4.
    let blob = "y".repeat(256 * 1024);
    let mut version = 1;
    while sidecar.metric("mycosynth_sidecar_stream_dropped_total", "reason=\"slow\"") < 1.0 {
        assert!(version < 200, "the stalled client was never dropped");
        version += 1;
        let value = format!("{blob}{version}");
        set_keys(&api, "shop", "prod", &[("blob", json!(value))]).await;
        // Every change reaches the fast client, in order, while the slow one stalls.
        let event = fast
            .next_event(WAIT)
            .expect("the fast client keeps getting events");
        assert!(
            matches!(&event, Sse::Event { id, .. } if *id == version.to_string()),
            "v{version}: {event:?}"
        );
        assert_eq!(event.json()["values"]["blob"], json!(value));
    }
    // The subscriber's updates went on: the sidecar serves the last version.
    assert_eq!(
        sidecar.get("/v1/config/shop/prod").json()["version"],
        json!(version)
    );
    // The closed client is dropped once a write to it fails, which can take a change or two
    // more than the slow one needed (the first write after a close may still be buffered).
    let deadline = std::time::Instant::now() + WAIT;
    while sidecar.metric("mycosynth_sidecar_stream_dropped_total", "reason=\"gone\"") < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed client was never dropped"
        );
        version += 1;
        set_keys(
            &api,
            "shop",
            "prod",
            &[("blob", json!(format!("z{version}")))],
        )
        .await;
        assert!(
            fast.next_event(WAIT).is_some(),
            "the fast client keeps getting events"
        );
    }
    assert_eq!(
        sidecar.get("/health").json()["change_stream_clients"],
        json!(1)
    );
}
