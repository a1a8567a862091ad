//! Rollouts (`--only rollouts`): with `count` subscribers in this process, each on its own
//! connection, a rollout at 100 % puts every one on the candidate; then it is aborted, and
//! the time from the abort's decision (its verdict's stamp, the validator's clock) to the last
//! subscriber serving stable again is sampled, `rounds` times.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{
    endpoint, ChangeOutcome, ChangeRequest, ChangeSource, KeyChange, RolloutActionRequest,
    RolloutOutcome, RolloutStartRequest,
};
use mycosynth_subscriber::Subscriber;

use crate::{histogram, now_us, Summary};

const NS: &str = "rollbench";
const ENV: &str = "bench";

fn start(round: usize) -> RolloutStartRequest {
    RolloutStartRequest {
        namespace: NS.into(),
        environment: ENV.into(),
        changes: vec![KeyChange::set("limit", (round as u64 + 1000).into())],
        change_request: None,
        steps: vec![100.0],
        bake_s: 3600,
        auto_rollback: false,
        health: Vec::new(),
        target: BTreeMap::new(),
        prometheus: None,
        author: "bench".into(),
        reason: "bench".into(),
        source: ChangeSource::Api,
    }
}

async fn until(subs: &[Subscriber], value: u64, timeout: Duration) -> Option<i64> {
    let deadline = Instant::now() + timeout;
    loop {
        if subs.iter().all(|s| s.get_or("limit", 0u64) == value) {
            return Some(now_us());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Abort decision → the last of `count` subscribers back on stable, over `rounds` rollouts.
pub async fn abort_to_stable(api: &ApiClient, url: &str, count: usize, rounds: usize) -> Summary {
    let _: ChangeOutcome = api
        .call(
            endpoint::CHANGE,
            &ChangeRequest::new(NS, ENV, vec![KeyChange::set("limit", 1u64.into())], "bench"),
        )
        .await
        .expect("stable version");
    let mut subs = Vec::with_capacity(count);
    for i in 0..count {
        let sub = Subscriber::builder(NS, ENV)
            .nats_url(url)
            .instance_id(format!("rollbench-{i:03}"))
            .receipts(true, Duration::from_millis(500))
            .connect()
            .await
            .expect("subscriber");
        subs.push(sub);
    }
    let action = RolloutActionRequest {
        namespace: NS.into(),
        environment: ENV.into(),
        author: "bench".into(),
        reason: "bench".into(),
    };
    let mut back = histogram();
    for round in 0..rounds {
        let _: RolloutOutcome = api
            .call(endpoint::ROLLOUT_START, &start(round))
            .await
            .expect("rollout start");
        if until(&subs, round as u64 + 1000, Duration::from_secs(30))
            .await
            .is_none()
        {
            eprintln!("round {round}: not every subscriber took the candidate; skipped");
        }
        let aborted: RolloutOutcome = api
            .call(endpoint::ROLLOUT_ABORT, &action)
            .await
            .expect("rollout abort");
        let decided_us = aborted
            .rollout
            .and_then(|r| r.verdict)
            .map_or_else(now_us, |v| v.at_us);
        match until(&subs, 1, Duration::from_secs(30)).await {
            Some(done_us) => {
                let _ = back.record(((done_us - decided_us).max(1) as u64) * 1000);
            }
            None => eprintln!("round {round}: not every subscriber went back to stable"),
        }
    }
    Summary::of(&back)
}
