//! `mycosynth rollout ...`: arguments only (clap, no I/O).

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Where a rollout command applies.
#[derive(Debug, Args)]
pub struct RolloutAt {
    /// Namespace.
    pub namespace: String,
    /// Environment.
    pub env: String,
}

/// `rollout start|status|pause|resume|promote|abort`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout: the change is validated like `set`/`apply`, then served to a canary
    /// cohort of instances first, step by step.
    Start(Box<RolloutStart>),
    /// Show the rollout, who serves the candidate, and the health rules on the cohorts.
    Status(RolloutAt),
    /// Stop advancing (canaries keep the candidate).
    Pause {
        #[command(flatten)]
        at: RolloutAt,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Advance again; the current step bakes anew from now.
    Resume(RolloutAt),
    /// Commit the candidate now, as one version.
    Promote(RolloutAt),
    /// Send the canaries back to the stable version.
    Abort {
        #[command(flatten)]
        at: RolloutAt,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// `rollout start`.
#[derive(Debug, Args)]
pub struct RolloutStart {
    #[command(flatten)]
    pub at: RolloutAt,
    /// Set a key: `KEY=JSON` (repeatable), as `set KEY JSON` would.
    #[arg(long = "set", value_name = "KEY=JSON")]
    pub set: Vec<String>,
    /// Delete a key (repeatable).
    #[arg(long = "delete", value_name = "KEY")]
    pub delete: Vec<String>,
    /// A YAML or JSON file of `key: value` lines, as `apply` takes.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Roll out an approved change request instead (its id).
    #[arg(long = "request", value_name = "ID", conflicts_with_all = ["set", "delete", "file"])]
    pub change_request: Option<String>,
    /// Percent of the instances per step, increasing, at most 100.
    #[arg(long, default_value = "1,10%,50%,100%")]
    pub steps: String,
    /// How long each step bakes (e.g. 30s, 2m).
    #[arg(long, default_value = "2m")]
    pub bake: String,
    /// Abort by itself on a regression, any rejection, or canaries going silent.
    #[arg(long)]
    pub auto_rollback: bool,
    /// A health rule on the canary cohort, e.g. `http_5xx_ratio<=control*1.1+0.01`
    /// (repeatable).
    #[arg(long = "health", value_name = "RULE")]
    pub health: Vec<String>,
    /// Only instances with this label, `label=value` (repeatable: all must hold).
    #[arg(long = "target", value_name = "LABEL=VALUE")]
    pub target: Vec<String>,
    /// An external signal: the Prometheus server whose `--query` must stay at or under
    /// `--max` (evaluated every 2 s; with --auto-rollback a breach aborts).
    #[arg(long, value_name = "URL", requires_all = ["query", "max"])]
    pub prometheus: Option<String>,
    /// The PromQL instant query of --prometheus (its highest series counts).
    #[arg(long, value_name = "PROMQL", requires = "prometheus")]
    pub query: Option<String>,
    /// The highest value --query may return.
    #[arg(long, value_name = "VALUE", requires = "prometheus")]
    pub max: Option<f64>,
    /// Why (recorded with the promoted version).
    #[arg(long, default_value = "")]
    pub reason: String,
}
