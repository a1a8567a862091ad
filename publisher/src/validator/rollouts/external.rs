//! A rollout's external signal: its Prometheus query, asked over HTTP (`/api/v1/query`) and
//! set against its bound. The answer's parsing is pure; the request runs on a blocking thread.
//!
//! An unreachable or failing Prometheus never aborts a rollout and never lets it advance: the
//! driver holds the step until the query answers again (a signal it cannot read is not a
//! healthy one).

use std::time::Duration;

use mycosynth_subscriber::wire::{PrometheusRule, SignalComparison};

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// A query's answer: its highest value (None: no series), or why there is none.
pub type Reading = Result<Option<f64>, String>;

/// Asks `rule`'s server for its query's value now.
pub async fn read(rule: &PrometheusRule) -> Reading {
    let url = format!("{}/api/v1/query", rule.url.trim_end_matches('/'));
    let query = rule.query.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(QUERY_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .get(&url)
            .query("query", &query)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .map_err(|e| format!("prometheus {url}: {e}"))
    })
    .await
    .map_err(|e| format!("prometheus query task: {e}"))
    .and_then(|answer| answer);
    let reading = answer.and_then(|body| parse_answer(&body));
    let outcome = match &reading {
        Ok(_) => "ok",
        Err(_) => "error",
    };
    metrics::counter!("mycosynth_rollouts_prometheus_queries_total", "outcome" => outcome)
        .increment(1);
    if let Ok(Some(value)) = reading {
        metrics::gauge!("mycosynth_rollouts_prometheus_value").set(value);
    }
    reading
}

/// The highest value of an instant query's answer (vector or scalar); NaN samples are skipped.
pub fn parse_answer(body: &str) -> Reading {
    let answer: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("prometheus answer is not JSON: {e}"))?;
    if answer["status"] != "success" {
        let why = answer["error"].as_str().unwrap_or("no reason given");
        return Err(format!("prometheus refused the query: {why}"));
    }
    let data = &answer["data"];
    let samples: Vec<&serde_json::Value> = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .map(|series| series.iter().map(|s| &s["value"]).collect())
            .unwrap_or_default(),
        Some("scalar") => vec![&data["result"]],
        other => {
            return Err(format!(
                "prometheus answered a {other:?}, not a vector or scalar"
            ))
        }
    };
    let mut highest: Option<f64> = None;
    for sample in samples {
        let value = sample[1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("prometheus sample {sample} has no value"))?;
        if !value.is_nan() {
            highest = Some(highest.map_or(value, |h| h.max(value)));
        }
    }
    Ok(highest)
}

/// The rule on its reading, as `rollout status` and the driver's judgement show it.
pub fn comparison(rule: &PrometheusRule, reading: &Reading) -> SignalComparison {
    let value = reading.as_ref().ok().copied().flatten();
    SignalComparison {
        rule: rule.describe(),
        canary: value,
        control: None,
        limit: Some(rule.max),
        holds: value.is_none_or(|v| v <= rule.max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_give_their_highest_value() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"instance":"a"},"value":[1.5,"0.02"]},
            {"metric":{"instance":"b"},"value":[1.5,"0.07"]},
            {"metric":{"instance":"c"},"value":[1.5,"NaN"]}]}}"#;
        assert_eq!(parse_answer(vector), Ok(Some(0.07)));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_answer(empty), Ok(None));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#;
        assert_eq!(parse_answer(scalar), Ok(Some(3.0)));
    }

    #[test]
    fn refusals_and_garbage_name_themselves() {
        let refused =
            r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert!(parse_answer(refused)
            .unwrap_err()
            .contains("parse error at char 3"));
        assert!(parse_answer("<html>").unwrap_err().contains("not JSON"));
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse_answer(matrix).unwrap_err().contains("matrix"));
    }

    #[test]
    fn the_bound_holds_without_data_and_breaks_above_it() {
        let rule = PrometheusRule {
            url: "http://127.0.0.1:9090".into(),
            query: "max(errors)".into(),
            max: 0.05,
        };
        assert!(comparison(&rule, &Ok(Some(0.05))).holds);
        assert!(!comparison(&rule, &Ok(Some(0.06))).holds);
        assert!(comparison(&rule, &Ok(None)).holds);
        assert!(comparison(&rule, &Err("down".into())).holds);
    }
}
