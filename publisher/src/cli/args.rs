//! Command-line arguments. Parsing does no I/O.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::clock::parse_duration;

pub use super::auth_args::{AuthCommand, CalloutArgs, CalloutKey};

/// Mycosynth: validated, versioned, live configuration on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "mycosynth", version, about, after_help = crate::cli::exit::EXIT_CODES_HELP)]
pub struct Cli {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long,
        global = true,
        env = "MYCOSYNTH_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Identity recorded on changes (default: $USER@hostname).
    #[arg(long, global = true, env = "MYCOSYNTH_AUTHOR")]
    pub author: Option<String>,
    /// File holding this identity's nkey seed (or the seed itself in env MYCOSYNTH_NKEY): used
    /// to connect to NATS and to sign every request.
    #[arg(long, global = true, env = "MYCOSYNTH_NKEY_FILE")]
    pub nkey_file: Option<PathBuf>,
    /// File holding a bearer token (a static token or a JWT such as a Kubernetes
    /// service-account token) for a server in auth-callout mode; read again at every
    /// reconnection, so a rotated file is picked up.
    #[arg(long, global = true, env = "MYCOSYNTH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the NATS server's certificate (turns TLS on).
    #[arg(long, global = true, env = "MYCOSYNTH_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This client's PEM certificate, for servers that verify clients (with --tls-key).
    #[arg(long, global = true, env = "MYCOSYNTH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// This client's PEM private key.
    #[arg(long, global = true, env = "MYCOSYNTH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds to wait for the validator's reply.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub timeout: f64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the validator service (the only writer).
    Serve(ServeArgs),
    /// Set one key.
    Set {
        /// Namespace (the service), e.g. payment-service.
        namespace: String,
        /// Environment, e.g. production.
        env: String,
        /// Dotted key, e.g. database.pool_size.
        key: String,
        /// The value as JSON: 50, true, "text", {"a":1}.
        value: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Show current values (all, or one key) with who set them.
    Get {
        /// Namespace.
        namespace: String,
        /// Environment.
        env: String,
        /// One key (default: all).
        key: Option<String>,
        /// Show where each value comes from: this environment, a parent, or the schema default.
        #[arg(long)]
        explain: bool,
        /// Show sensitive values in clear (if your identity may); otherwise `<redacted>`.
        #[arg(long)]
        reveal: bool,
    },
    /// Delete one key.
    Delete {
        /// Namespace.
        namespace: String,
        /// Environment.
        env: String,
        /// Dotted key.
        key: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Apply a YAML or JSON file of `key: value` lines as one atomic change set.
    Apply {
        /// The file (.yaml, .yml or .json); top-level keys are config keys.
        file: PathBuf,
        /// Namespace.
        #[arg(long)]
        namespace: String,
        /// Environment.
        #[arg(long)]
        env: String,
        /// Print the diff and the validation result; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete live keys that the file does not name.
        #[arg(long)]
        prune: bool,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// List versions with author, time, reason and changes (newest first).
    History {
        /// Namespace.
        namespace: String,
        /// Environment.
        env: String,
        /// Only versions that changed this key.
        #[arg(long)]
        key: Option<String>,
        /// At most this many versions.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Restore exactly the state of an earlier version, as a new version.
    Rollback {
        /// Namespace.
        namespace: String,
        /// Environment.
        env: String,
        /// The version to restore.
        #[arg(long)]
        to: u64,
        /// Print the diff only.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Namespace schemas.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Print each change of a namespace/environment as it arrives.
    Watch {
        /// Namespace.
        namespace: String,
        /// Environment.
        env: String,
        /// Keep a last-known-good cache here, and start from it when NATS is down.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Seconds between heartbeat receipts to the fleet view.
        #[arg(long, default_value_t = 10.0)]
        heartbeat: f64,
    },
    /// The access policy (admins only; the validator must run with --auth signed).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Generate an nkey pair for a new identity: writes the seed to FILE (mode 0600) and prints
    /// the public key to register in the NATS config and the policy.
    Keygen {
        /// Where to write the seed; refuses to overwrite.
        file: PathBuf,
    },
    /// Which instances of a namespace/environment hold which version.
    Status {
        /// Namespace.
        namespace: String,
        /// Environment.
        env: String,
        /// Wait until every live instance holds at least this version (up to --timeout);
        /// exit code 9 if they do not.
        #[arg(long)]
        wait_version: Option<u64>,
    },
    /// The fleet's health signals in a window before and after a version's commit, and
    /// canary against control while a rollout runs.
    Impact {
        /// Namespace.
        namespace: String,
        /// Environment.
        env: String,
        /// The version (default: the latest).
        #[arg(long)]
        version: Option<u64>,
        /// The window on each side of the commit (e.g. 30s, 5m; at most 1h).
        #[arg(long, default_value = "5m")]
        window: String,
    },
    /// Check a config repository offline (for CI): every file against its schema and the
    /// naming, size and inheritance rules. No server needed.
    Validate {
        /// The repository: config/<namespace>/<env>.yaml and schemas/<namespace>.schema.json.
        dir: PathBuf,
        /// A namespace without a schema file is an error.
        #[arg(long)]
        require_schema: bool,
    },
    /// Deploy a config repository: one atomic change set per (namespace, environment) that
    /// differs, with the git commit recorded.
    Deploy {
        /// The repository.
        dir: PathBuf,
        #[command(flatten)]
        select: RepoSelect,
        /// Print the plan as a diff; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete live keys that the files do not name.
        #[arg(long)]
        prune: bool,
        /// Why (recorded in history; default: "deploy <commit>").
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List every live key that differs from the files, with who/when/why; exit code 10 when
    /// there is drift.
    Drift {
        /// The repository.
        dir: PathBuf,
        #[command(flatten)]
        select: RepoSelect,
        /// Print a unified diff (for `git apply`) that brings the files to the live state.
        #[arg(long)]
        patch: bool,
    },
    /// Show, declare or remove the parent environment an environment inherits from.
    Parent {
        /// Namespace.
        namespace: String,
        /// The child environment.
        env: String,
        /// The parent environment (same namespace).
        parent: Option<String>,
        /// Stop inheriting.
        #[arg(long, conflicts_with = "parent")]
        clear: bool,
    },
    /// List audit records (every request the validator handled), or `audit verify` the chain.
    Audit(AuditArgs),
    /// Change requests: list, show, approve, reject, cancel, amend, rebase, apply.
    #[command(subcommand)]
    Requests(RequestsCommand),
    /// Progressive delivery: start a rollout to a canary cohort, then status, pause, resume,
    /// promote, abort.
    #[command(subcommand)]
    Rollout(super::rollout_args::RolloutCommand),
    /// Read-only site replicas on leaf nodes (run against the site's own server).
    #[command(subcommand)]
    Site(SiteCommand),
    /// Serve one namespace/environment's config over HTTP to applications in any language:
    /// the runtime API, a change stream (Server-Sent Events) and OpenFeature (OFREP).
    Sidecar(SidecarArgs),
    /// The web console (`console --listen ADDR`): browse, edit with validation, diff,
    /// history and rollback, compare environments, approvals, fleet and audit; `console
    /// login URL` signs you in with your own key.
    Console(super::console_args::ConsoleArgs),
    /// Write one consistent, checksummed archive of the whole cluster's Mycosynth state
    /// (config, history, schemas, policy, data keys encrypted with --key-file, audit log).
    Backup {
        /// The archive to write (replaced only once complete).
        file: PathBuf,
        #[command(flatten)]
        key: BackupKeyArg,
    },
    /// Restore an archive into an empty cluster, before any validator starts (needs
    /// credentials that may create streams: nats-admin). The archive is checked whole first.
    Restore {
        /// The archive.
        file: PathBuf,
        #[command(flatten)]
        key: BackupKeyArg,
        /// Delete the Mycosynth streams the cluster holds, then restore (destroys that state).
        #[arg(long)]
        force: bool,
        /// Replicas of the buckets (0: 3 on a cluster of three or more, else 1).
        #[arg(long, default_value_t = 0)]
        replicas: usize,
    },
    /// Identity at fleet scale: the NATS auth callout, static tokens, and the static
    /// server config.
    #[command(subcommand)]
    Auth(AuthCommand),
}

/// The operator's key of a backup's data keys.
#[derive(Debug, Args, Clone)]
pub struct BackupKeyArg {
    /// File holding 32 random bytes in base64 (`head -c 32 /dev/urandom | base64`) that the
    /// data keys are encrypted with in the archive.
    #[arg(long, env = "MYCOSYNTH_BACKUP_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

/// `mycosynth site ...`
#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Create this site's mirrors of the hub's config and schema buckets (and data keys with
    /// --data-keys), on the server of --nats-url (the site's leaf node). Idempotent.
    Init {
        /// The hub's JetStream domain (`jetstream { domain }` of the hub's servers).
        #[arg(long)]
        hub_domain: String,
        /// Mirror the data keys too: the site's services may read sensitive values.
        #[arg(long)]
        data_keys: bool,
        /// Replicas of each mirror (the site's own cluster size).
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// Seconds to wait for the mirrors' first contact with the hub.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
    },
    /// Probe sites from the hub (--nats-url at the hub): versions behind, seconds since each
    /// mirror last heard from the hub. The validator exports the same (`serve --site`).
    Status {
        /// A site's JetStream domain (repeatable).
        #[arg(long = "site", required = true)]
        sites: Vec<String>,
    },
}

/// Which files of a repository a command acts on.
#[derive(Debug, Args, Clone)]
pub struct RepoSelect {
    /// Only this environment.
    #[arg(long)]
    pub env: Option<String>,
    /// Only this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
}

/// Options shared by commands that change config.
#[derive(Debug, Args, Clone)]
pub struct ChangeArgs {
    /// Why (recorded in history).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Commit only if the current version is this one.
    #[arg(long)]
    pub expect_version: Option<u64>,
    /// Mark the change as an emergency override (needs --reason); `drift` flags it until
    /// the files catch up. Where approval is required, only identities the approval rule
    /// allows may, and a review of the change is opened.
    #[arg(long)]
    pub emergency: bool,
    /// Propose the change for review (a change request) even where no approval is required.
    #[arg(long)]
    pub propose: bool,
    /// Apply the change at this time (RFC 3339, e.g. 2026-12-24T06:00:00Z), once approved.
    #[arg(long)]
    pub at: Option<String>,
    /// A change request expires unapplied after this long (e.g. 30m, 12h, 7d; default 7d).
    #[arg(long, value_parser = parse_duration)]
    pub expires: Option<u64>,
    /// How late after --at a scheduled change may still be applied if no validator ran at
    /// its time (default 10m); after that it is marked missed.
    #[arg(long, value_parser = parse_duration)]
    pub grace: Option<u64>,
}

/// `mycosynth requests ...`: change requests (review and scheduled application).
#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// List change requests (default: every pending one you may read).
    List {
        /// Only yours.
        #[arg(long)]
        mine: bool,
        /// Only those you may approve and have not.
        #[arg(long)]
        to_approve: bool,
        /// Only scheduled ones, by time.
        #[arg(long)]
        scheduled: bool,
        /// Only reviews of emergency changes still waiting.
        #[arg(long)]
        review: bool,
        /// Final ones too.
        #[arg(long)]
        all: bool,
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only this environment.
        #[arg(long)]
        env: Option<String>,
    },
    /// Show one, with its diff against the current state and the keys it conflicts on.
    Show {
        /// Its id (`requests list` shows them).
        id: String,
    },
    /// Approve one, bound to the content you reviewed.
    Approve {
        /// Its id.
        id: String,
        /// The content hash `requests show` printed (default: the one it has now, shown as
        /// it is approved).
        #[arg(long)]
        content_hash: Option<String>,
        /// A comment.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Reject one.
    Reject {
        /// Its id.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Withdraw one of yours.
    Cancel {
        /// Its id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Replace the change set of one of yours (its approvals are dropped).
    Amend {
        /// Its id.
        id: String,
        /// KEY=JSON to set (repeatable).
        #[arg(long = "set", value_name = "KEY=JSON")]
        set: Vec<String>,
        /// KEY to delete (repeatable).
        #[arg(long)]
        delete: Vec<String>,
        /// A YAML or JSON file of keys to set.
        #[arg(long)]
        file: Option<PathBuf>,
        /// A new reason.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Validate one again on the current state after a conflict (its approvals are dropped).
    Rebase {
        /// Its id.
        id: String,
    },
    /// Apply an approved one now.
    Apply {
        /// Its id.
        id: String,
    },
}

/// `mycosynth schema ...`
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Store a namespace's JSON Schema (refused if live config violates it, unless --force).
    Push {
        /// Namespace.
        namespace: String,
        /// The JSON Schema file.
        file: PathBuf,
        /// Store it even if live config violates it.
        #[arg(long)]
        force: bool,
    },
    /// Print a namespace's JSON Schema.
    Get {
        /// Namespace.
        namespace: String,
    },
    /// Render a namespace's schema as Markdown: keys, types, constraints, defaults, descriptions.
    Docs {
        /// Namespace.
        namespace: String,
        /// Render this schema file instead of the stored schema (no server needed).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// `mycosynth policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the stored policy as JSON.
    Get,
    /// Replace the policy with this JSON or YAML file.
    Set {
        /// The policy file.
        file: PathBuf,
    },
}

/// How `mycosynth serve` authenticates requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthArg {
    /// Nobody is verified; the declared author is recorded (local tinkering only).
    Open,
    /// Requests must be signed by an identity of the stored policy, which decides.
    Signed,
}

/// `mycosynth serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTP port with /metrics and /health.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub http: SocketAddr,
    /// Refuse changes to namespaces that have no schema.
    #[arg(long)]
    pub require_schema: bool,
    /// Replicas of the buckets when this validator creates them (0: 3 when the server is in a
    /// cluster of three or more, else 1).
    #[arg(long, default_value_t = 0)]
    pub replicas: usize,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// Seconds without a receipt after which an instance is listed as stale.
    #[arg(long, default_value_t = 25.0)]
    pub stale_after: f64,
    /// Seconds without a receipt after which an instance leaves the fleet view.
    #[arg(long, default_value_t = 60.0)]
    pub instance_expiry: f64,
    /// `open` (no authentication, for nats/dev.conf) or `signed` (the policy decides).
    #[arg(long, value_enum, default_value = "open")]
    pub auth: AuthArg,
    /// NAME=PUBLIC_KEY: an administrator written into the policy when none is stored yet
    /// (repeatable; signed mode).
    #[arg(long = "admin", value_name = "NAME=PUBLIC_KEY")]
    pub admins: Vec<String>,
    /// Per-identity limit on change requests (change, rollback, schema push), e.g. `10/s` or
    /// `100/m`; refused requests get exit code 11. Default: no limit.
    #[arg(long)]
    pub rate_limit: Option<crate::access::limits::RateLimit>,
    /// Requests an identity may send at once above the rate (default: the rate's count).
    #[arg(long)]
    pub rate_burst: Option<std::num::NonZeroU32>,
    /// Threads that run the validator's work. One is the fastest on a machine it shares with
    /// nats-server: its work per change is tens of microseconds, and commits of one validator
    /// go through one task anyway, so a second thread adds hand-offs between threads (about
    /// 25 µs per change) and no throughput. More help with large namespaces under a JSON
    /// Schema, or signed requests at high rates, on cores of their own.
    #[arg(long, env = "MYCOSYNTH_WORKERS", default_value_t = std::num::NonZeroUsize::MIN)]
    pub workers: std::num::NonZeroUsize,
    /// JetStream domain of a site replica whose lag this validator watches and exports
    /// (`mycosynth_site_*` metrics, `mycosynth status`); repeatable or comma-separated.
    #[arg(
        long = "site",
        value_name = "DOMAIN",
        env = "MYCOSYNTH_SITES",
        value_delimiter = ','
    )]
    pub sites: Vec<String>,
    /// How many namespace/environment states the validator keeps cached; past that, the least
    /// recently used idle ones are dropped and read again from KV at their next change.
    #[arg(long, env = "MYCOSYNTH_CACHED_STATES", default_value_t = 1000)]
    pub cached_states: usize,
}

/// `mycosynth audit [--namespace N] [--env E] [--identity I] [--since T] [verify]`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    /// Only records of this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only records of this environment.
    #[arg(long)]
    pub env: Option<String>,
    /// Only records of this identity.
    #[arg(long)]
    pub identity: Option<String>,
    /// Only records at or after this time (RFC 3339, e.g. 2026-01-31T12:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many records (the newest).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// `verify`: check the whole hash chain.
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
}

/// `mycosynth audit verify`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain; exit code 12 naming the first bad sequence if it is broken.
    Verify,
}

/// `mycosynth sidecar`
#[derive(Debug, Args)]
pub struct SidecarArgs {
    /// Namespace served (the only one).
    pub namespace: String,
    /// Environment served (the only one).
    pub env: String,
    /// Address to listen on.
    #[arg(
        long,
        env = "MYCOSYNTH_SIDECAR_LISTEN",
        default_value = "127.0.0.1:8686"
    )]
    pub listen: SocketAddr,
    /// Keep a last-known-good cache here, and start from it when NATS is down.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Exit (code 7) when no config could be loaded within this many seconds; by default keep
    /// trying, answering 503 on /health meanwhile.
    #[arg(long)]
    pub start_timeout: Option<f64>,
    /// Seconds between heartbeats on the change stream.
    #[arg(long, default_value_t = 15.0)]
    pub heartbeat: f64,
    /// Events a change-stream client may have waiting; one more and it is dropped (it
    /// reconnects and gets the current state).
    #[arg(long, default_value_t = 256)]
    pub client_queue: usize,
    /// Largest request body, in bytes (OFREP evaluation requests).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body: usize,
    /// A host name to answer for besides localhost and the listen address (repeatable; `*`:
    /// any). On a loopback address other names are refused, against DNS rebinding.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allowed_hosts: Vec<String>,
    /// This instance's id in the fleet view (`mycosynth status`).
    #[arg(long)]
    pub instance_id: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}
