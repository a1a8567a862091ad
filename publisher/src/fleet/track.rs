//! Following the fleet: every receipt on `mycosynth.receipts.>` is recorded, and once a second
//! silent instances expire and the fleet gauges of each namespace/environment are exported.

use std::sync::Arc;

use futures::StreamExt;
use mycosynth_subscriber::wire::{self, Environment, Namespace, Receipt};

use super::view::Fleet;
use crate::clock::now_us;
use crate::store::Store;

/// Listens to every receipt, and once a second expires silent instances and exports the fleet
/// gauges of each namespace/environment.
pub async fn track(
    fleet: Arc<Fleet>,
    store: Store,
    client: async_nats::Client,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut receipts = match client.subscribe(wire::RECEIPTS_ALL).await {
        Ok(subscription) => subscription,
        Err(err) => {
            tracing::error!(error = %err, "cannot follow receipts; the fleet view stays empty");
            return;
        }
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let stopped = async move {
        let mut stop = stop;
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            message = receipts.next() => {
                let Some(message) = message else { break };
                match serde_json::from_slice::<Receipt>(&message.payload) {
                    Ok(receipt) => fleet.record(receipt, now_us()),
                    Err(err) => {
                        metrics::counter!("mycosynth_fleet_malformed_receipts_total").increment(1);
                        tracing::debug!(error = %err, "ignoring a malformed receipt");
                    }
                }
            }
            _ = tick.tick() => {
                let now = now_us();
                fleet.expire(now);
                for (ns, env) in fleet.groups() {
                    let (Ok(namespace), Ok(environment)) = (Namespace::new(&ns), Environment::new(&env)) else { continue };
                    let Ok(head) = store.head(&namespace, &environment).await else { continue };
                    let (version, committed) = head.map_or((0, 0), |h| (h.version, h.meta.time_us));
                    let status = fleet.status(&ns, &env, version, committed, now);
                    fleet.export(&ns, &env, &status, now);
                }
            }
        }
    }
}
