//! Which validator instance writes which namespace/environment, so that several instances do not
//! race each other for the same head.
//!
//! Every instance is a member of one queue group, so a change request lands on any of them. Two
//! instances committing to one namespace at the same time lose compare-and-set races to each
//! other, and each lost race costs a catch-up and a second validation: with two instances
//! sharing the load, fewer change sets per second went through than with one. So each
//! namespace/environment has an owner among the live instances (rendezvous hashing: the highest
//! score of instance id and slot), and an instance that receives a change request for a slot it
//! does not own forwards it to the owner's own subject
//! ([`direct_subject`](mycosynth_subscriber::wire::direct_subject)).
//!
//! Ownership is a preference, not a lock: correctness still rests on the head's
//! compare-and-set. Instances that disagree for a moment (one has not seen a new instance yet, or
//! runs another hash) only race as before. Instances are discovered through NATS's service API
//! (`$SRV.PING.mycosynth-validator`, every [`DISCOVERY_INTERVAL`]); one not heard for
//! [`PEER_EXPIRY`], or whose subject has no responder, is no longer an owner.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mycosynth_subscriber::wire::{validator_ping_subject, SERVICE_NAME};

/// The endpoints whose requests go to the owner of their slot: those that commit to it.
pub const ROUTED: [&str; 2] = [
    mycosynth_subscriber::wire::endpoint::CHANGE,
    mycosynth_subscriber::wire::endpoint::ROLLBACK,
];

/// Whether requests to `endpoint` go to the owner of their slot ([`ROUTED`]).
pub fn routed(endpoint: &str) -> bool {
    ROUTED.contains(&endpoint)
}

/// How often instances are discovered.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);
/// An instance not heard from for this long is not given slots any more.
pub const PEER_EXPIRY: Duration = Duration::from_millis(3_500);

/// This instance's id and the other instances it has heard from lately.
pub struct Affinity {
    own: String,
    peers: Mutex<HashMap<String, Instant>>,
}

impl Affinity {
    /// Ownership as seen by the instance `own` (its service id), before any peer is known.
    pub fn new(own: impl Into<String>) -> Affinity {
        Affinity {
            own: own.into(),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// The instances as a client sees them: it is none of them, so [`Affinity::owner`] names
    /// one of the instances it has heard from (or none, before it has heard from any).
    pub fn observer() -> Affinity {
        Affinity::new(String::new())
    }

    /// This instance's id.
    pub fn own(&self) -> &str {
        &self.own
    }

    /// The live instance that writes `ns`/`env`, when it is another one (`None`: this one).
    pub fn owner(&self, ns: &str, env: &str) -> Option<String> {
        let now = Instant::now();
        let peers = self.lock();
        // An observer (no id of its own) only chooses among the instances it has heard from.
        let mut best = (
            (!self.own.is_empty()).then(|| score(&self.own, ns, env)),
            None,
        );
        for (id, seen) in peers.iter() {
            if now.duration_since(*seen) > PEER_EXPIRY {
                continue;
            }
            let candidate = Some(score(id, ns, env));
            if candidate > best.0 {
                best = (candidate, Some(id));
            }
        }
        best.1.cloned()
    }

    /// Other instances heard from lately.
    pub fn peers(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .values()
            .filter(|seen| now.duration_since(**seen) <= PEER_EXPIRY)
            .count()
    }

    /// Whether `id` answered discovery within [`PEER_EXPIRY`].
    pub fn is_live(&self, id: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .get(id)
            .is_some_and(|seen| now.duration_since(*seen) <= PEER_EXPIRY)
    }

    /// Instances live now, this one included.
    pub fn live(&self) -> usize {
        1 + self.peers()
    }

    /// `id` answered (now).
    pub fn heard(&self, id: &str) {
        if id != self.own {
            self.lock().insert(id.to_owned(), Instant::now());
        }
    }

    /// `id` is gone (its subject had no responder): it owns nothing until it answers again.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pings the validator service every [`DISCOVERY_INTERVAL`] and records who answers, until
    /// `stop` turns true.
    pub async fn discover(
        &self,
        client: async_nats::Client,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let inbox = client.new_inbox();
        let mut answers = match client.subscribe(inbox.clone()).await {
            Ok(answers) => answers,
            Err(err) => {
                tracing::warn!(error = %err, "cannot discover other validator instances; each writes alone");
                return;
            }
        };
        let mut tick = tokio::time::interval(DISCOVERY_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
                _ = tick.tick() => {
                    let ping = client.publish_with_reply(validator_ping_subject(), inbox.clone(), "".into());
                    if let Err(err) = ping.await {
                        tracing::debug!(error = %err, "validator discovery ping not sent");
                    }
                    metrics::gauge!("mycosynth_validator_instances").set(self.live() as f64);
                }
                answer = answers.next() => match answer {
                    Some(answer) => match serde_json::from_slice::<Ping>(&answer.payload) {
                        Ok(ping) if ping.name == SERVICE_NAME => self.heard(&ping.id),
                        Ok(_) => {}
                        Err(err) => tracing::debug!(error = %err, "unreadable discovery answer"),
                    },
                    None => break,
                },
            }
        }
    }
}

/// What became of a request forwarded to the owner of its slot.
pub enum Forwarded {
    /// The owner answered: its reply, for the client as it is.
    Answered(bytes::Bytes),
    /// Nobody listens on the owner's subject (it stopped): serve the request here.
    OwnerGone,
    /// The owner stopped answering discovery while the request was with it ([`PEER_EXPIRY`]),
    /// or [`FORWARD_LIMIT`] passed, or the server refused the forward: the request is served
    /// here after all. Should the owner come back and apply it late, a request id makes the
    /// second attempt a replay, an `expected_version` a conflict.
    Unanswered,
}

/// The longest a forwarded request is waited for, however live its owner: past any client's
/// own timeout (the CLI's is 5 s, the API client's a caller's choice).
pub const FORWARD_LIMIT: Duration = Duration::from_secs(30);
/// How often a forwarder looks whether the owner it waits for is still live.
const OWNER_CHECK: Duration = Duration::from_millis(250);

/// Sends `message` (a request received on the queue group's `endpoint` subject) on to `owner`,
/// headers (its signature) and body unchanged, and waits for its reply as long as `owner` stays
/// live in `affinity`. A slow owner is waited for rather than passed over: serving the request
/// here as well would commit it twice (once here, once when the owner gets to it, possibly
/// after later change sets of the same keys) and make the two instances race for the slot
/// just when the owner is already behind.
pub async fn forward(
    client: &async_nats::Client,
    affinity: &Affinity,
    owner: &str,
    endpoint: &str,
    message: &async_nats::Message,
) -> Forwarded {
    let subject = mycosynth_subscriber::wire::direct_subject(owner, endpoint);
    let request = async_nats::Request::new()
        .headers(message.headers.clone().unwrap_or_default())
        .payload(message.payload.clone())
        .timeout(Some(FORWARD_LIMIT));
    let sent = client.send_request(subject, request);
    tokio::pin!(sent);
    let mut check = tokio::time::interval(OWNER_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            reply = &mut sent => break match reply {
                Ok(reply) => Forwarded::Answered(reply.payload),
                Err(err) if err.kind() == async_nats::RequestErrorKind::NoResponders => {
                    Forwarded::OwnerGone
                }
                Err(err) => {
                    tracing::warn!(owner, endpoint, error = %err, "forwarding a request failed");
                    Forwarded::Unanswered
                }
            },
            _ = check.tick() => if !affinity.is_live(owner) {
                break Forwarded::Unanswered;
            },
        }
    };
    let label = match outcome {
        Forwarded::Answered(_) => "answered",
        Forwarded::OwnerGone => "owner_gone",
        Forwarded::Unanswered => "unanswered",
    };
    metrics::counter!("mycosynth_validator_forwarded_total", "outcome" => label).increment(1);
    outcome
}

/// The part of a service-API ping answer discovery reads.
#[derive(serde::Deserialize)]
struct Ping {
    name: String,
    id: String,
}

/// Rendezvous score of `instance` for `ns`/`env`: a fixed-seed hash, so every instance of a
/// build computes the same owner.
fn score(instance: &str, ns: &str, env: &str) -> u64 {
    foldhash::quality::FixedState::with_seed(0x6d79_636f).hash_one((instance, ns, env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_an_instance_owns_everything() {
        let a = Affinity::new("a");
        assert_eq!(a.owner("billing", "prod"), None);
        assert_eq!(a.live(), 1);
    }

    #[test]
    fn instances_agree_on_one_owner_per_slot_and_share_the_slots() {
        let (a, b) = (Affinity::new("AAAA1"), Affinity::new("BBBB2"));
        a.heard("BBBB2");
        b.heard("AAAA1");
        let mut owned_by_a = 0;
        for n in 0..200 {
            let ns = format!("ns{n}");
            let (from_a, from_b) = (a.owner(&ns, "prod"), b.owner(&ns, "prod"));
            match (from_a.as_deref(), from_b.as_deref()) {
                // a keeps it, b sends it to a
                (None, Some("AAAA1")) => owned_by_a += 1,
                // a sends it to b, b keeps it
                (Some("BBBB2"), None) => {}
                other => panic!("{ns}: the two instances disagree: {other:?}"),
            }
        }
        assert!(
            (60..=140).contains(&owned_by_a),
            "{owned_by_a} of 200 slots"
        );
    }

    #[test]
    fn a_forgotten_instance_owns_nothing() {
        let a = Affinity::new("AAAA1");
        a.heard("BBBB2");
        let theirs = (0..50)
            .map(|n| format!("ns{n}"))
            .find(|ns| a.owner(ns, "prod").is_some())
            .expect("some slot is the other instance's");
        a.forget("BBBB2");
        assert_eq!(a.owner(&theirs, "prod"), None);
        assert_eq!(a.live(), 1);
    }

    #[test]
    fn an_instance_never_hears_itself_as_a_peer() {
        let a = Affinity::new("AAAA1");
        a.heard("AAAA1");
        assert_eq!(a.live(), 1);
    }
}
