use std::time::Duration;

use mycosynth_subscriber::wire::{ChangeEvent, EventChange, EVENT_FORMAT};
use mycosynth_subscriber::Subscriber;
use mycosynth_testkit::{NatsServer, Proxy, Validator};
use rand::RngCore;
use serde_json::json;

use crate::set_keys;

/// Acceptance 6: a subscriber whose connection is cut while changes happen converges to the
/// latest version once it reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_catches_up_after_its_connection_is_cut() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    set_keys(&api, "billing", "prod", &[("rate", json!(1))]).await;

    let proxy = Proxy::start(nats.port());
    let config = Subscriber::builder("billing", "prod")
        .nats_url(proxy.url())
        .connect()
        .await
        .unwrap();
    assert_eq!(config.get::<i64>("rate").unwrap(), 1);

    proxy.cut();
    for rate in 2..=6 {
        set_keys(
            &api,
            "billing",
            "prod",
            &[("rate", json!(rate)), (&format!("k{rate}"), json!(rate))],
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        config.get::<i64>("rate").unwrap(),
        1,
        "cut off: still serving the last good value"
    );
    proxy.restore();

    assert!(
        config.wait_for_version(6, Duration::from_secs(20)).await,
        "did not converge; at {}",
        config.version()
    );
    assert_eq!(config.get::<i64>("rate").unwrap(), 6);
    assert_eq!(config.snapshot().len(), 6);
    assert!(config.stats().resyncs >= 1);
}

/// Acceptance 7: random and truncated bytes on the event subject are counted, never applied,
/// and the subscriber keeps serving and following changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_event_subject_is_counted_and_ignored() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    set_keys(&api, "ledger", "prod", &[("x", json!(1))]).await;
    let config = Subscriber::builder("ledger", "prod")
        .nats_url(nats.url())
        .connect()
        .await
        .unwrap();

    let client = async_nats::connect(nats.url()).await.unwrap();
    let subject = "mycosynth.events.prod.ledger";
    // Mangled forms of a well-formed event for version 1, which the subscriber already holds:
    // whatever survives decoding can only be a duplicate, so nothing here may change a value.
    let valid = ChangeEvent {
        format: EVENT_FORMAT,
        namespace: "ledger".into(),
        environment: "prod".into(),
        version: 1,
        previous_version: 0,
        changes: vec![EventChange {
            key: "x".into(),
            value_json: Some("666".into()),
        }],
        change_id: "forged".into(),
        author: "nobody".into(),
        reason: String::new(),
        source: "api".into(),
        committed_at_us: 0,
        approved_by: Vec::new(),
        change_request: None,
    }
    .encode();
    let mut rng = rand::rng();
    let mut garbage: Vec<Vec<u8>> = Vec::new();
    for len in [0usize, 1, 7, 64, 1000, 100_000] {
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        garbage.push(bytes);
    }
    for cut in [1, valid.len() / 2, valid.len() - 1] {
        garbage.push(valid[..cut].to_vec());
    }
    let mut flipped = valid.clone();
    let last = flipped.len() - 8;
    flipped[last] ^= 0xff;
    garbage.push(flipped);
    // A well-formed event whose value is not JSON.
    let mut bad_value = ChangeEvent::decode(&valid).unwrap();
    bad_value.changes[0].value_json = Some("{not json".into());
    garbage.push(bad_value.encode());
    for bytes in &garbage {
        client.publish(subject, bytes.clone().into()).await.unwrap();
    }
    client.flush().await.unwrap();

    let handled = |s: mycosynth_subscriber::Stats| s.decode_errors + s.duplicates_ignored;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handled(config.stats()) < garbage.len() as u64 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = config.stats();
    assert_eq!(handled(stats), garbage.len() as u64, "{stats:?}");
    // Random bytes and truncations never decode; a flipped byte may land in padding.
    assert!(stats.decode_errors >= garbage.len() as u64 - 1, "{stats:?}");
    assert_eq!(stats.updates_applied, 0);
    assert_eq!(
        (config.version(), config.get::<i64>("x").unwrap()),
        (1, 1),
        "no garbage applied"
    );

    set_keys(&api, "ledger", "prod", &[("x", json!(2))]).await;
    assert!(config.wait_for_version(2, Duration::from_secs(10)).await);
    assert_eq!(
        config.get::<i64>("x").unwrap(),
        2,
        "still following real changes"
    );
}

/// The value of the Prometheus sample `name` whose labels are exactly `labels`, if rendered.
fn sample(rendered: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    rendered.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let inner = series
            .strip_prefix(name)?
            .strip_prefix('{')?
            .strip_suffix('}')?;
        let mut found: Vec<&str> = inner.split(',').collect();
        let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        found.sort_unstable();
        wanted.sort_unstable();
        (found == wanted).then(|| value.parse().ok()).flatten()
    })
}

/// Two subscribers in one process report their own version and applied changes, labelled with
/// their namespace and environment, to the recorder the process installs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_in_one_process_export_their_own_labelled_metrics() {
    // The only recorder this test binary installs; other tests' subscribers record into it too,
    // under their own labels.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("install a recorder");
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    set_keys(&api, "labels-a", "prod", &[("rate", json!(1))]).await;
    set_keys(&api, "labels-b", "prod", &[("rate", json!(1))]).await;
    let connect = |ns: &'static str| {
        Subscriber::builder(ns, "prod")
            .nats_url(nats.url())
            .connect()
    };
    let (a, b) = (
        connect("labels-a").await.unwrap(),
        connect("labels-b").await.unwrap(),
    );
    set_keys(&api, "labels-a", "prod", &[("rate", json!(2))]).await;
    set_keys(&api, "labels-a", "prod", &[("rate", json!(3))]).await;
    assert!(a.wait_for_version(3, Duration::from_secs(10)).await);
    assert_eq!(b.version(), 1);

    let rendered = recorder.render();
    let of = |ns| [("namespace", ns), ("environment", "prod")];
    let version = |ns| sample(&rendered, "mycosynth_subscriber_version", &of(ns));
    let applied = |ns| {
        sample(
            &rendered,
            "mycosynth_subscriber_updates_applied_total",
            &of(ns),
        )
    };
    assert_eq!(version("labels-a"), Some(3.0), "{rendered}");
    assert_eq!(
        version("labels-b"),
        Some(1.0),
        "the version loaded at start: {rendered}"
    );
    assert_eq!(applied("labels-a"), Some(2.0), "{rendered}");
    assert_eq!(applied("labels-b"), Some(0.0), "{rendered}");
    // Version 2 has no spare and copies version 1's map; version 3 brings version 1's map
    // forward, as nothing here holds it anymore.
    let copies = |ns| {
        sample(
            &rendered,
            "mycosynth_subscriber_snapshot_copies_total",
            &of(ns),
        )
    };
    assert_eq!(copies("labels-a"), Some(1.0), "{rendered}");
    assert_eq!(copies("labels-b"), Some(0.0), "{rendered}");
    assert_eq!(a.stats().snapshot_copies, 1, "{:?}", a.stats());
}

/// A change notice carries the change set's keys and attribution as committed. The subscriber
/// builds notices only while someone listens: a version applied with nobody listening is still
/// served, and a listener that comes later gets the next version's notice whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_notices_carry_the_change_sets_keys_and_attribution() {
    use mycosynth_subscriber::wire::{endpoint, ChangeOutcome, ChangeRequest, KeyChange};
    use mycosynth_subscriber::NoticeCause;

    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let api = crate::api(&nats.url()).await;
    set_keys(&api, "ledger", "prod", &[("a", json!(1)), ("b", json!(2))]).await;
    let config = Subscriber::builder("ledger", "prod")
        .nats_url(nats.url())
        .connect()
        .await
        .unwrap();

    // Nobody listens yet: applied and served all the same.
    set_keys(&api, "ledger", "prod", &[("a", json!(10))]).await;
    assert!(config.wait_for_version(2, Duration::from_secs(10)).await);
    assert_eq!(config.get::<i64>("a").unwrap(), 10);

    let mut notices = config.subscribe();
    let mut request = ChangeRequest::new(
        "ledger",
        "prod",
        vec![KeyChange::set("c.d", json!("x")), KeyChange::delete("b")],
        "carol",
    );
    request.reason = "move b under c".into();
    let outcome: ChangeOutcome = api.call(endpoint::CHANGE, &request).await.unwrap();
    assert_eq!(outcome.version, 3);
    let notice = tokio::time::timeout(Duration::from_secs(10), notices.recv())
        .await
        .expect("a notice for version 3")
        .expect("notice");
    assert_eq!(notice.version, 3);
    assert_eq!(notice.previous_version, 2);
    assert_eq!(notice.cause, NoticeCause::Event);
    let mut keys = notice.keys.clone();
    keys.sort();
    assert_eq!(keys, ["b", "c.d"]);
    assert_eq!(notice.author, "carol");
    assert_eq!(notice.reason, "move b under c");
    assert_eq!(Some(notice.change_id.clone()), outcome.change_id);
    assert!(notice.committed_at_us > 0 && notice.applied_at_us >= notice.committed_at_us);
    assert_eq!(config.get::<String>("c.d").unwrap(), "x");
    assert!(config.get::<i64>("b").is_err(), "b was deleted");
}

/// A scan of a bucket that does not exist yet (a fresh server) says so as `NoBucket`, which the
/// loader and the backup read as "nothing stored", not as an outage.
#[tokio::test]
async fn a_scan_before_any_bucket_exists_is_no_bucket() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let scanned = mycosynth_subscriber::kv_scan::scan(
        &js,
        "mycosynth-config",
        "payment-service.prod.>",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(
        matches!(scanned, Err(mycosynth_subscriber::kv_scan::ScanError::NoBucket(ref b)) if b == "mycosynth-config"),
        "{scanned:?}"
    );
}
