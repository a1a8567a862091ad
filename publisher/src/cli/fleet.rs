//! `mycosynth status`: the fleet view of a namespace/environment, and waiting for a version
//! to land everywhere.

use std::time::Duration;

use mycosynth_subscriber::wire::{endpoint, StatusOutcome, StatusRequest};

use super::exit::{self, CliError};
use super::output;
use crate::client::ApiClient;

/// `mycosynth status`: the fleet table; with `wait_version`, polls until every live instance
/// holds that version or `budget` passes.
pub async fn fleet_status(
    api: &ApiClient,
    request: StatusRequest,
    wait_version: Option<u64>,
    budget: Duration,
    json: bool,
) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let status: StatusOutcome = api
            .call_retrying(
                endpoint::STATUS,
                &request,
                left.max(Duration::from_millis(100)),
            )
            .await?;
        let converged =
            wait_version.is_none_or(|v| status.instances.iter().all(|i| i.receipt.version >= v));
        if converged || tokio::time::Instant::now() >= deadline {
            output::fleet(&status, json);
            return match wait_version {
                Some(v) if !converged => {
                    Err(CliError::Local(
                        exit::NOT_CONVERGED,
                        format!(
                        "not converged: {} of {} live instances hold version {v} after {budget:?}",
                        status.instances.iter().filter(|i| i.receipt.version >= v).count(),
                        status.instances.len()
                    ),
                    ))
                }
                _ => Ok(()),
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
