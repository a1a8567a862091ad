//! The impact contract: the fleet's health signals in a window before and after a version
//! was committed (`mycosynth impact`), and canary against control while a rollout runs.

use serde::{Deserialize, Serialize};

use super::SignalComparison;

/// The window of an impact query when the request names none, in seconds.
pub const IMPACT_WINDOW_DEFAULT_S: u64 = 300;
/// The longest window an impact query may ask for, in seconds (the validator keeps an hour).
pub const IMPACT_WINDOW_MAX_S: u64 = 3600;

/// Ask how the fleet's health signals moved around the commit of `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpactRequest {
    /// Namespace.
    pub namespace: String,
    /// Environment.
    pub environment: String,
    /// The version whose impact is asked for (None: the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The window on each side of the commit, in seconds (default
    /// [`IMPACT_WINDOW_DEFAULT_S`], at most [`IMPACT_WINDOW_MAX_S`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
}

/// One signal on one side of the commit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SignalWindow {
    /// Instances that reported the signal in the window.
    pub instances: usize,
    /// Receipts that carried it.
    pub samples: usize,
    /// The mean over instances of each instance's mean (each instance weighs the same).
    pub mean: f64,
    /// The highest instance mean.
    pub max: f64,
}

/// One health signal before and after the commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalImpact {
    /// The signal's name (`health_signal(name, ..)`).
    pub signal: String,
    /// In the window before the commit, from instances serving an earlier version.
    pub before: Option<SignalWindow>,
    /// In the window after the commit, from instances serving this version.
    pub after: Option<SignalWindow>,
}

impl SignalImpact {
    /// After against before, as a ratio of the means (None without both sides or with a
    /// zero mean before).
    pub fn ratio(&self) -> Option<f64> {
        let (before, after) = (self.before?, self.after?);
        (before.mean != 0.0).then(|| after.mean / before.mean)
    }
}

/// The answer of `impact`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpactOutcome {
    /// The version asked about.
    pub version: u64,
    /// When it was committed, µs since the epoch.
    pub committed_at_us: i64,
    /// The window on each side, in seconds.
    pub window_s: u64,
    /// Each signal the fleet reported in either window, by name.
    pub signals: Vec<SignalImpact>,
    /// While a rollout runs here: its health rules on canary against control now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutImpact>,
}

/// Canary against control of the running rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutImpact {
    /// The rollout's id.
    pub id: String,
    /// Each health rule on the cohorts' means now.
    pub comparison: Vec<SignalComparison>,
}
