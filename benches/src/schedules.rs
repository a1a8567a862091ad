//! How late scheduled change requests fire: `count` schedules, `spacing` apart, over ten
//! namespaces, each applied by the validator's scheduler at its time; lateness is the commit
//! stamp of the version each made minus its time.

use std::collections::HashMap;
use std::time::Duration;

use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{
    endpoint, ChangeOutcome, ChangeRequest, HistoryOutcome, HistoryRequest, KeyChange,
    ProposeOptions,
};

use crate::{histogram, now_us, Summary};

const NAMESPACES: usize = 10;

/// Schedules `count` changes `spacing` apart, starting a few seconds from now, waits for them
/// to fire, and summarizes how late each was committed after its time.
pub async fn lateness(api: &ApiClient, count: usize, spacing: Duration) -> Summary {
    let first_us = now_us() + 3_000_000 + (count as i64) * 2_000;
    let mut due: HashMap<String, i64> = HashMap::new();
    for i in 0..count {
        let at_us = first_us + spacing.as_micros() as i64 * i as i64;
        let mut request = ChangeRequest::new(
            format!("sched{}", i % NAMESPACES),
            "bench",
            vec![KeyChange::set(format!("k{i}"), (i as u64).into())],
            "bench",
        );
        request.proposal = Some(ProposeOptions {
            at: mycosynth::clock::rfc3339_us(at_us),
            ..ProposeOptions::default()
        });
        let outcome: ChangeOutcome = api
            .call(endpoint::CHANGE, &request)
            .await
            .expect("schedule a change");
        let id = outcome.proposed.expect("a scheduled change request").id;
        due.insert(id, at_us);
    }
    let last_us = due.values().copied().max().unwrap_or(first_us);
    let wait_us = (last_us - now_us()).max(0) as u64 + 3_000_000;
    tokio::time::sleep(Duration::from_micros(wait_us)).await;
    let mut late = histogram();
    let mut fired = 0;
    for n in 0..NAMESPACES {
        let request = HistoryRequest {
            namespace: format!("sched{n}"),
            environment: "bench".into(),
            key: None,
            limit: Some(count),
        };
        let history: HistoryOutcome = api
            .call(endpoint::HISTORY, &request)
            .await
            .expect("history");
        for set in history.change_sets {
            let Some(at_us) = set.meta.change_request.as_ref().and_then(|id| due.get(id)) else {
                continue;
            };
            fired += 1;
            let ns = ((set.meta.time_us - at_us).max(0) as u64).saturating_mul(1000);
            let _ = late.record(ns.max(1));
        }
    }
    assert_eq!(fired, count, "every schedule fired once");
    Summary::of(&late)
}
