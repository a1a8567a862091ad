//! The head is the commit point: a change set whose validator died after writing its head, before
//! writing its values, history and idempotency records, is still the current version for every
//! reader, is never applied twice, and is completed by the next writer.

use mycosynth_subscriber::wire::{
    endpoint, ChangeOutcome, HeadRecord, HistoryOutcome, HistoryRequest, KeyChange, ValueRecord,
    CONFIG_BUCKET,
};
use mycosynth_subscriber::Subscriber;
use mycosynth_testkit::{NatsServer, Validator};
use serde_json::json;

use crate::{api, change_request, set_keys};

const HEAD: &str = "orders.prod._meta.head";

async fn value_record(kv: &async_nats::jetstream::kv::Store, key: &str) -> Option<ValueRecord> {
    let bytes = kv
        .get(format!("orders.prod.{key}"))
        .await
        .expect("kv get")?;
    Some(serde_json::from_slice(&bytes).expect("value record"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_without_its_values_is_rolled_forward_then_completed() {
    let nats = NatsServer::start();
    let mut validator = Validator::start(&nats.url(), &[]);
    let first = set_keys(
        &api(&nats.url()).await,
        "orders",
        "prod",
        &[("a", json!(1)), ("b", json!(2))],
    )
    .await;
    assert_eq!(first.version, 1);
    validator.kill();

    // What a validator leaves when it dies right after its commit point: the head of version 2,
    // carrying its change set, and nothing else.
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let kv = async_nats::jetstream::new(client)
        .get_key_value(CONFIG_BUCKET)
        .await
        .expect("config bucket");
    let entry = kv.entry(HEAD).await.expect("head").expect("a head");
    let mut head: HeadRecord = serde_json::from_slice(&entry.value).expect("head record");
    head.version = 2;
    head.meta.change_id = "interrupted".into();
    head.meta.request_id = Some("req-interrupted".into());
    head.changes = Some(vec![KeyChange::set("a", json!(5)), KeyChange::delete("b")]);
    kv.update(
        HEAD,
        serde_json::to_vec(&head).unwrap().into(),
        entry.revision,
    )
    .await
    .expect("head written");
    assert_eq!(value_record(&kv, "a").await.map(|r| r.version), Some(1));

    // Readers: a subscriber loading now holds version 2 exactly.
    let config = Subscriber::builder("orders", "prod")
        .nats_url(nats.url())
        .connect()
        .await
        .expect("subscriber");
    assert_eq!(config.version(), 2);
    assert_eq!(config.get::<i64>("a").expect("a"), 5);
    assert!(
        config.get::<i64>("b").is_err(),
        "b was deleted at version 2"
    );

    // The interrupted request, retried: answered with its first outcome, not applied again.
    let _validator = Validator::start(&nats.url(), &[]);
    let api = api(&nats.url()).await;
    let mut retry = change_request("orders", "prod", &[("a", json!(5))]);
    retry.changes.push(KeyChange::delete("b"));
    retry.request_id = Some("req-interrupted".into());
    let outcome: ChangeOutcome = api.call(endpoint::CHANGE, &retry).await.expect("retry");
    assert!(outcome.replayed, "{outcome:?}");
    assert_eq!(outcome.version, 2);
    assert_eq!(outcome.change_id.as_deref(), Some("interrupted"));

    // The validator that read the incomplete head completed it in KV.
    let a = value_record(&kv, "a").await.expect("a materialised");
    assert_eq!(
        (a.version, a.value, a.meta.change_id.as_str()),
        (2, json!(5), "interrupted")
    );
    assert!(value_record(&kv, "b").await.is_none(), "b deleted in KV");
    assert!(kv.get("_history.orders.prod.2").await.unwrap().is_some());
    assert!(kv
        .get("_requests.orders.prod.req-interrupted")
        .await
        .unwrap()
        .is_some());

    // The next change builds on it; the history has every version once.
    let next = set_keys(&api, "orders", "prod", &[("c", json!(3))]).await;
    assert_eq!(next.version, 3);
    let history: HistoryOutcome = api
        .call(
            endpoint::HISTORY,
            &HistoryRequest {
                namespace: "orders".into(),
                environment: "prod".into(),
                key: None,
                limit: None,
            },
        )
        .await
        .expect("history");
    let versions: Vec<u64> = history.change_sets.iter().map(|s| s.version).collect();
    assert_eq!(versions, vec![3, 2, 1]);
    assert!(
        config
            .wait_for_version(3, std::time::Duration::from_secs(10))
            .await
    );
    assert_eq!(config.get::<i64>("c").expect("c"), 3);
    assert!(config.get::<i64>("b").is_err());
}
