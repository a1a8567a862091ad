//! The answer of every `rollout-*` endpoint: the record, the cohorts as the fleet reports
//! them, and the health rules on them now.

use mycosynth_subscriber::wire::{Environment, Namespace, RolloutOutcome, RolloutRecord};

use super::external;
use super::judge::{cohorts, compare};
use crate::clock::now_us;
use crate::failure::Failure;
use crate::validator::instance::Validator;

impl Validator {
    /// `record` (else the stored one) of `ns`/`env` with its cohorts.
    pub async fn rollout_outcome(
        &self,
        ns: &Namespace,
        env: &Environment,
        record: Option<RolloutRecord>,
    ) -> Result<RolloutOutcome, Failure> {
        let record = match record {
            Some(record) => Some(record),
            None => self.store.rollout(ns, env).await?.map(|(r, _)| r),
        };
        let stable_version = self.store.head(ns, env).await?.map_or(0, |h| h.version);
        let Some(record) = record else {
            return Ok(RolloutOutcome {
                rollout: None,
                stable_version,
                canaries: Vec::new(),
                control: Vec::new(),
                comparison: Vec::new(),
            });
        };
        let fleet = self
            .fleet
            .status(ns.as_str(), env.as_str(), stable_version, 0, now_us());
        let cohorts = cohorts(&record, &fleet.instances);
        let mut comparison = compare(&record, &cohorts);
        if let Some(rule) = record
            .prometheus
            .as_ref()
            .filter(|_| record.state.is_live())
        {
            comparison.push(external::comparison(rule, &external::read(rule).await));
        }
        Ok(RolloutOutcome {
            rollout: Some(record),
            stable_version,
            canaries: cohorts.canaries,
            control: cohorts.control,
            comparison,
        })
    }
}
