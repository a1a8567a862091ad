//! The rollout contract (docs/rollouts.md): the [`RolloutRecord`] stored at
//! `<ns>.<env>._meta.rollout` and announced on `mycosynth.rollouts.<env>.<ns>`, cohort
//! membership ([`cohort_bucket`]), steps and health rules as written on the command line, and
//! the request/reply bodies of the `rollout-*` endpoints.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ChangeSource, DiffEntry, KeyChange};

/// Cohort buckets per 100 %: a step of `p` % holds the buckets below `p × 100`.
pub const COHORT_BUCKETS: u32 = 10_000;

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Members serve the candidate; the driver bakes and advances steps.
    Running,
    /// Members keep serving the candidate; nothing advances.
    Paused,
    /// The candidate was committed as one version.
    Promoted,
    /// Members went back to the stable version.
    Aborted,
}

impl RolloutState {
    /// Whether members serve the candidate in this state.
    pub fn is_live(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

/// Who ended a rollout (or paused it), why and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutVerdict {
    /// The identity, or `driver` for the validator's own decisions.
    pub by: String,
    /// Why, in one line.
    pub reason: String,
    /// When, µs since the Unix epoch.
    pub at_us: i64,
}

/// One rollout of a namespace/environment, as stored and announced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// Unique id (`ro-` and 12 hex digits); seeds cohort membership.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Environment.
    pub environment: String,
    /// Where it stands.
    pub state: RolloutState,
    /// How many times the record was written (orders a notice against a read).
    #[serde(default)]
    pub updates: u64,
    /// The candidate: the validated change set (no sealed values).
    pub changes: Vec<KeyChange>,
    /// Its diff against the base version.
    #[serde(default)]
    pub diff: Vec<DiffEntry>,
    /// The stable version the candidate was validated on.
    pub base_version: u64,
    /// The version each key it touches had there (None: not set).
    #[serde(default)]
    pub base_keys: BTreeMap<String, Option<u64>>,
    /// Percent of the instances in each step, increasing, the last at most 100.
    pub steps: Vec<f64>,
    /// The current step (an index into `steps`).
    pub step: usize,
    /// When the current step started, µs since the epoch.
    pub step_started_us: i64,
    /// How long each step bakes before the next, seconds.
    pub bake_s: u64,
    /// Abort by itself on a regression, a rejection, or silent canaries.
    pub auto_rollback: bool,
    /// The health rules, as written (each parses as a [`HealthRule`]).
    #[serde(default)]
    pub health: Vec<String>,
    /// Only instances with all these labels take part.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub target: BTreeMap<String, String>,
    /// An external signal: a Prometheus query and its bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<super::PrometheusRule>,
    /// The approved change request it comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_request: Option<String>,
    /// Who started it.
    pub author: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Where the change comes from.
    #[serde(default)]
    pub source: ChangeSource,
    /// When it started, µs since the epoch.
    pub created_us: i64,
    /// The last pause, promotion or abort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<RolloutVerdict>,
    /// The version the promotion committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_version: Option<u64>,
}

impl RolloutRecord {
    /// The percent of the current step (0 when there are no steps).
    pub fn percent(&self) -> f64 {
        self.steps.get(self.step).copied().unwrap_or(0.0)
    }

    /// Whether an instance with `instance_id` and `labels` is in the target at all.
    pub fn targets(&self, labels: &BTreeMap<String, String>) -> bool {
        self.target.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Whether that instance serves the candidate now.
    pub fn holds_candidate(&self, instance_id: &str, labels: &BTreeMap<String, String>) -> bool {
        self.state.is_live()
            && self.targets(labels)
            && cohort_bucket(&self.id, instance_id) < percent_buckets(self.percent())
    }
}

/// The cohort bucket of an instance in a rollout, in `0..COHORT_BUCKETS`: the first 8 bytes of
/// SHA-256 of `<rollout id>/<instance id>`, big-endian, modulo [`COHORT_BUCKETS`]. Members of a
/// step are the buckets below its percent × 100, so raising a step keeps every member and a
/// restarted instance with the same id is a member again.
pub fn cohort_bucket(rollout_id: &str, instance_id: &str) -> u32 {
    let digest = Sha256::digest(format!("{rollout_id}/{instance_id}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(COHORT_BUCKETS)) as u32
}

/// The buckets a step of `percent` holds.
pub fn percent_buckets(percent: f64) -> u32 {
    (percent.clamp(0.0, 100.0) * 100.0).round() as u32
}

/// Reads `--steps` as written (`1,10%,50%,100%`; a bare number is a percent too): each above
/// the one before, the first above 0, none above 100.
pub fn parse_steps(text: &str) -> Result<Vec<f64>, String> {
    let steps: Vec<f64> = text
        .split(',')
        .map(|s| {
            let s = s.trim();
            s.strip_suffix('%')
                .unwrap_or(s)
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("step {s:?} is not a percent (like 10%)"))
        })
        .collect::<Result<_, _>>()?;
    check_steps(&steps)?;
    Ok(steps)
}

/// The rule on steps: at least one, increasing, the first above 0, none above 100.
pub fn check_steps(steps: &[f64]) -> Result<(), String> {
    if steps.is_empty() {
        return Err("steps: at least one step is needed".into());
    }
    for (i, step) in steps.iter().enumerate() {
        if !step.is_finite() || *step <= 0.0 || *step > 100.0 {
            return Err(format!("steps: {step}% is not above 0% and at most 100%"));
        }
        if i > 0 && *step <= steps[i - 1] {
            return Err(format!(
                "steps: {step}% does not increase on {}%",
                steps[i - 1]
            ));
        }
    }
    Ok(())
}

/// The bound a health rule puts on the canary cohort's mean of a signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// `canary <= control × factor + offset`.
    Relative {
        /// Multiplies the control cohort's mean.
        factor: f64,
        /// Added to it.
        offset: f64,
    },
    /// `canary <= value`.
    Absolute(f64),
}

/// A health rule: `http_5xx_ratio<=control*1.1+0.01`, `latency_ms<=control+5`,
/// `errors<=3`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthRule {
    /// The signal's name, as services register it.
    pub signal: String,
    /// Its bound.
    pub bound: Bound,
}

impl HealthRule {
    /// Parses a rule; the error names the rule and what is wrong.
    pub fn parse(text: &str) -> Result<HealthRule, String> {
        let bad = |why: &str| {
            format!("health rule {text:?}: {why} (like http_5xx_ratio<=control*1.1+0.01)")
        };
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let (signal, bound) = compact.split_once("<=").ok_or_else(|| bad("no <= in it"))?;
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if signal.is_empty() || !signal.chars().all(valid) {
            return Err(bad("the signal's name must be letters, digits, _ . -"));
        }
        let number = |s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(&format!("{s:?} is not a number")))
        };
        let bound = match bound.strip_prefix("control") {
            None => Bound::Absolute(number(bound)?),
            Some(rest) => {
                let (factor, offset) = match rest.strip_prefix('*') {
                    Some(scaled) => match scaled.split_once('+') {
                        Some((f, o)) => (number(f)?, number(o)?),
                        None => (number(scaled)?, 0.0),
                    },
                    None if rest.is_empty() => (1.0, 0.0),
                    None => match rest.strip_prefix('+') {
                        Some(o) => (1.0, number(o)?),
                        None => return Err(bad("expected control*FACTOR+OFFSET")),
                    },
                };
                Bound::Relative { factor, offset }
            }
        };
        Ok(HealthRule {
            signal: signal.to_owned(),
            bound,
        })
    }

    /// The most the canary cohort's mean may be, given the control cohort's (None: no control
    /// data for a relative rule).
    pub fn limit(&self, control: Option<f64>) -> Option<f64> {
        match self.bound {
            Bound::Absolute(value) => Some(value),
            Bound::Relative { factor, offset } => control.map(|c| c * factor + offset),
        }
    }
}

impl fmt::Display for HealthRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bound {
            Bound::Absolute(v) => write!(f, "{}<={v}", self.signal),
            Bound::Relative { factor, offset } => {
                write!(f, "{}<=control*{factor}+{offset}", self.signal)
            }
        }
    }
}

/// What an instance reports about a rollout in its receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutHold {
    /// The rollout.
    pub id: String,
    /// Serves the candidate (a member) or stable (control).
    pub candidate: bool,
    /// Why it refused the candidate, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

/// `rollout-start`: a change set (or an approved change request) to roll out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStartRequest {
    /// Namespace.
    pub namespace: String,
    /// Environment.
    pub environment: String,
    /// The keys to set or delete (empty with `change_request`).
    #[serde(default)]
    pub changes: Vec<KeyChange>,
    /// An approved change request whose change set to roll out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_request: Option<String>,
    /// Percent of the instances per step.
    pub steps: Vec<f64>,
    /// Bake per step, seconds.
    pub bake_s: u64,
    /// Abort by itself on a regression, a rejection or silent canaries.
    #[serde(default)]
    pub auto_rollback: bool,
    /// Health rules, as written.
    #[serde(default)]
    pub health: Vec<String>,
    /// Only instances with these labels.
    #[serde(default)]
    pub target: BTreeMap<String, String>,
    /// An external signal: a Prometheus query and its bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<super::PrometheusRule>,
    /// Who asks.
    pub author: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Where the change comes from.
    #[serde(default)]
    pub source: ChangeSource,
}

/// What a `rollout-*` step asks for besides start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutAction {
    /// Show it.
    Status,
    /// Stop advancing.
    Pause,
    /// Advance again.
    Resume,
    /// Commit the candidate now.
    Promote,
    /// Send members back to stable.
    Abort,
}

/// `rollout-status|pause|resume|promote|abort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutActionRequest {
    /// Namespace.
    pub namespace: String,
    /// Environment.
    pub environment: String,
    /// Who asks.
    pub author: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// One instance in a cohort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortMember {
    /// Its id.
    pub instance_id: String,
    /// The stable version it holds.
    pub version: u64,
    /// It serves the candidate (as it reports).
    pub candidate: bool,
    /// Its health signals.
    #[serde(default)]
    pub health: BTreeMap<String, f64>,
}

/// One health rule evaluated on the cohorts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalComparison {
    /// The rule, as written.
    pub rule: String,
    /// The canary cohort's mean.
    pub canary: Option<f64>,
    /// The control cohort's mean.
    pub control: Option<f64>,
    /// The bound the canary mean must stay within.
    pub limit: Option<f64>,
    /// Whether it holds (true while either side has no data).
    pub holds: bool,
}

/// The answer of every `rollout-*` endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutOutcome {
    /// The rollout (None: none was ever started here).
    pub rollout: Option<RolloutRecord>,
    /// The stable version.
    pub stable_version: u64,
    /// Instances that should serve the candidate.
    #[serde(default)]
    pub canaries: Vec<CohortMember>,
    /// The other targeted instances.
    #[serde(default)]
    pub control: Vec<CohortMember>,
    /// The health rules on the cohorts now.
    #[serde(default)]
    pub comparison: Vec<SignalComparison>,
}

#[cfg(test)]
mod contract_tests {
    use super::super::{Environment, Namespace};
    use super::*;

    #[test]
    fn rollout_key_subject_and_buckets_are_pinned() {
        let (ns, env) = (
            Namespace::new("payment-service").unwrap(),
            Environment::new("production").unwrap(),
        );
        assert_eq!(
            super::super::rollout_key(&ns, &env),
            "payment-service.production._meta.rollout"
        );
        assert_eq!(super::super::rollouts_filter(), "*.*._meta.rollout");
        assert_eq!(
            super::super::rollout_notice_subject(&ns, &env),
            "mycosynth.rollouts.production.payment-service"
        );
        // Pinned: every subscriber and validator must put an instance in the same cohort.
        assert_eq!(cohort_bucket("ro-000000000001", "svc-01"), 9_730);
        assert_eq!(cohort_bucket("ro-000000000001", "svc-02"), 1_761);
        assert_eq!(percent_buckets(10.0), 1_000);
        assert_eq!(percent_buckets(0.5), 50);
    }

    #[test]
    fn raising_a_step_keeps_its_members() {
        let mut record = record();
        let ids: Vec<String> = (0..200).map(|i| format!("svc-{i:03}")).collect();
        let none = BTreeMap::new();
        let members = |r: &RolloutRecord| -> Vec<&String> {
            ids.iter()
                .filter(|id| r.holds_candidate(id, &none))
                .collect()
        };
        let at_10 = members(&record);
        record.step = 1;
        let at_50 = members(&record);
        assert!(at_10.iter().all(|m| at_50.contains(m)));
        assert!(at_10.len() < at_50.len());
        assert!((10..=35).contains(&at_10.len()), "{}", at_10.len());
        record.state = RolloutState::Aborted;
        assert!(members(&record).is_empty());
    }

    #[test]
    fn targets_need_every_label() {
        let mut record = record();
        record.steps = vec![100.0];
        record.target = BTreeMap::from([("zone".to_string(), "eu-1".to_string())]);
        let eu = BTreeMap::from([("zone".to_string(), "eu-1".to_string())]);
        let us = BTreeMap::from([("zone".to_string(), "us-1".to_string())]);
        assert!(record.holds_candidate("a", &eu));
        assert!(!record.holds_candidate("a", &us));
        assert!(!record.holds_candidate("a", &BTreeMap::new()));
    }

    #[test]
    fn steps_increase_and_stay_within_100() {
        assert_eq!(
            parse_steps("1,10%,50%,100%").unwrap(),
            vec![1.0, 10.0, 50.0, 100.0]
        );
        assert!(parse_steps("10%,5%")
            .unwrap_err()
            .contains("does not increase"));
        assert!(parse_steps("10%,10%").is_err());
        assert!(parse_steps("50%,150%")
            .unwrap_err()
            .contains("at most 100%"));
        assert!(parse_steps("0%").is_err());
        assert!(parse_steps("ten").unwrap_err().contains("\"ten\""));
    }

    #[test]
    fn health_rules_parse_or_name_themselves() {
        let rule = HealthRule::parse("http_5xx_ratio <= control * 1.1 + 0.01").unwrap();
        assert_eq!(rule.signal, "http_5xx_ratio");
        assert_eq!(
            rule.bound,
            Bound::Relative {
                factor: 1.1,
                offset: 0.01
            }
        );
        assert!((rule.limit(Some(0.1)).unwrap() - 0.12).abs() < 1e-9);
        assert_eq!(rule.limit(None), None);
        assert_eq!(
            HealthRule::parse("latency_ms<=control+5").unwrap().bound,
            Bound::Relative {
                factor: 1.0,
                offset: 5.0
            }
        );
        assert_eq!(
            HealthRule::parse("errors<=3").unwrap().bound,
            Bound::Absolute(3.0)
        );
        for bad in ["http_5xx_ratio", "x<=control*", "<=3", "x<=contrl*2"] {
            let err = HealthRule::parse(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    fn record() -> RolloutRecord {
        RolloutRecord {
            prometheus: None,
            id: "ro-000000000001".into(),
            namespace: "payment-service".into(),
            environment: "production".into(),
            state: RolloutState::Running,
            updates: 0,
            changes: vec![KeyChange::set("limit", serde_json::json!(2))],
            diff: Vec::new(),
            base_version: 3,
            base_keys: BTreeMap::from([("limit".to_string(), Some(2))]),
            steps: vec![10.0, 50.0, 100.0],
            step: 0,
            step_started_us: 1,
            bake_s: 60,
            auto_rollback: true,
            health: vec!["errors<=control*1.1+0.01".into()],
            target: BTreeMap::new(),
            change_request: None,
            author: "alice".into(),
            reason: "faster".into(),
            source: ChangeSource::Cli,
            created_us: 1,
            verdict: None,
            promoted_version: None,
        }
    }

    #[test]
    fn the_record_json_is_pinned() {
        let json = serde_json::to_string(&record()).unwrap();
        assert_eq!(
            json,
            r#"{"id":"ro-000000000001","namespace":"payment-service","environment":"production","state":"running","updates":0,"changes":[{"key":"limit","value":2}],"diff":[],"base_version":3,"base_keys":{"limit":2},"steps":[10.0,50.0,100.0],"step":0,"step_started_us":1,"bake_s":60,"auto_rollback":true,"health":["errors<=control*1.1+0.01"],"author":"alice","reason":"faster","source":"cli","created_us":1}"#
        );
        let back: RolloutRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record());
    }
}
