//! A rollout's external signal: a Prometheus query whose value must stay at or under a bound
//! (`rollout start --prometheus URL --query PROMQL --max VALUE`), evaluated by the driver.

use serde::{Deserialize, Serialize};

/// How often the driver evaluates a rollout's Prometheus query, in milliseconds.
pub const PROMETHEUS_EVERY_MS: u64 = 2_000;

/// A Prometheus query and the bound its value (the highest of its series) must stay within.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrometheusRule {
    /// The Prometheus server, `http://host:port` (its `/api/v1/query` is asked).
    pub url: String,
    /// The PromQL instant query.
    pub query: String,
    /// The highest value the query may return.
    pub max: f64,
}

impl PrometheusRule {
    /// The rule as `rollout status` names it.
    pub fn describe(&self) -> String {
        format!("prometheus {} <= {}", self.query, self.max)
    }

    /// Checks the rule's shape (not that the server answers): one line naming what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "prometheus url {:?}: use http://host:port or https://host:port",
                self.url
            ));
        }
        if self.query.trim().is_empty() {
            return Err("prometheus query is empty".into());
        }
        if !self.max.is_finite() {
            return Err(format!("prometheus max {}: not a finite number", self.max));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_check_their_shape() {
        let rule = PrometheusRule {
            url: "http://127.0.0.1:9090".into(),
            query: "max(errors)".into(),
            max: 0.05,
        };
        assert!(rule.check().is_ok());
        assert_eq!(rule.describe(), "prometheus max(errors) <= 0.05");
        let bad_url = PrometheusRule {
            url: "127.0.0.1:9090".into(),
            ..rule.clone()
        };
        assert!(bad_url.check().unwrap_err().contains("use http://"));
        let empty = PrometheusRule {
            query: " ".into(),
            ..rule.clone()
        };
        assert!(empty.check().unwrap_err().contains("empty"));
        let nan = PrometheusRule {
            max: f64::NAN,
            ..rule
        };
        assert!(nan.check().unwrap_err().contains("finite"));
    }
}
