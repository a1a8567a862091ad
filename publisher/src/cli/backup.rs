//! `mycosynth site init|status`, `mycosynth backup` and `mycosynth restore`: commands that talk
//! to JetStream directly (a site's server, or a cluster with no validator running).

use std::path::Path;
use std::time::{Duration, Instant};

use mycosynth_subscriber::wire::SiteLag;
use mycosynth_subscriber::Credentials;

use super::args::{BackupKeyArg, Command, SiteCommand};
use super::exit::{self, CliError};
use crate::backup::{self, BackupError, BackupKey};
use crate::site::{self, SiteError, SiteInit};
use crate::store::BucketOptions;

impl From<BackupError> for CliError {
    fn from(err: BackupError) -> Self {
        let code = match &err {
            BackupError::Unavailable(_) => exit::UNAVAILABLE,
            BackupError::Archive { .. } => exit::ARCHIVE_DAMAGED,
            BackupError::Key(_) | BackupError::File(_) => exit::INPUT,
            BackupError::NotEmpty(_) => exit::NOT_EMPTY,
        };
        CliError::Local(code, err.to_string())
    }
}

impl From<SiteError> for CliError {
    fn from(err: SiteError) -> Self {
        let code = match &err {
            SiteError::Unavailable(_) => exit::UNAVAILABLE,
            SiteError::Conflict(_) => exit::NOT_EMPTY,
            SiteError::Invalid(_) => exit::VALIDATION,
        };
        CliError::Local(code, err.to_string())
    }
}

/// Runs a site, backup or restore command.
pub async fn run(
    nats_url: &str,
    creds: &Credentials,
    command: Command,
    json: bool,
) -> Result<(), CliError> {
    // Local input first: a bad key file or archive fails before anything is contacted.
    let prepared = match &command {
        Command::Restore { file, key, .. } => Some(backup::read_file(file, key_of(key)?.as_ref())?),
        _ => None,
    };
    let client = crate::connect_with(nats_url, "mycosynth-cli", creds)
        .await
        .map_err(|message| {
            CliError::Local(
                exit::UNAVAILABLE,
                format!("cannot connect to NATS at {nats_url}: {message}"),
            )
        })?;
    match command {
        Command::Site(SiteCommand::Init {
            hub_domain,
            data_keys,
            replicas,
            wait,
        }) => {
            let options = SiteInit {
                hub_domain,
                data_keys,
                replicas,
                wait: Duration::from_secs_f64(wait.clamp(0.0, 3600.0)),
            };
            site_init(&client, &options, json).await
        }
        Command::Site(SiteCommand::Status { sites }) => {
            let js = async_nats::jetstream::new(client.clone());
            let now = crate::site::lag::now_us();
            let mut lags = Vec::new();
            for domain in &sites {
                site::check_domain(domain)?;
                lags.push(crate::site::lag::probe(&client, &js, domain, None, now).await);
            }
            if json {
                println!("{}", serde_json::to_string(&lags).unwrap_or_default());
            } else {
                print_sites(&lags);
            }
            match lags.iter().find(|l| !l.reachable) {
                Some(l) => Err(CliError::Local(
                    exit::UNAVAILABLE,
                    format!(
                        "site {} unreachable: {}",
                        l.site,
                        l.error.as_deref().unwrap_or("")
                    ),
                )),
                None => Ok(()),
            }
        }
        Command::Backup { file, key } => backup_to(&client, &file, key_of(&key)?, json).await,
        Command::Restore {
            file,
            force,
            replicas,
            ..
        } => {
            let contents =
                prepared.ok_or_else(|| CliError::Local(exit::INTERNAL, "no archive".into()))?;
            restore_from(&client, &file, &contents, force, replicas, json).await
        }
        _ => Err(CliError::Local(
            exit::USAGE,
            "not a site, backup or restore command".into(),
        )),
    }
}

async fn site_init(
    client: &async_nats::Client,
    options: &SiteInit,
    json: bool,
) -> Result<(), CliError> {
    let reports = site::init(client, options).await?;
    if json {
        println!("{}", serde_json::to_string(&reports).unwrap_or_default());
        return Ok(());
    }
    for r in &reports {
        println!(
            "{:<20} {:<8} {:>8} messages, {}",
            r.bucket,
            if r.created { "created" } else { "existed" },
            r.messages,
            if r.connected {
                "in contact with the hub"
            } else {
                "no contact with the hub yet"
            }
        );
    }
    Ok(())
}

fn key_of(arg: &BackupKeyArg) -> Result<Option<BackupKey>, CliError> {
    Ok(arg
        .key_file
        .as_deref()
        .map(BackupKey::from_file)
        .transpose()?)
}

async fn backup_to(
    client: &async_nats::Client,
    file: &Path,
    key: Option<BackupKey>,
    json: bool,
) -> Result<(), CliError> {
    let started = Instant::now();
    let js = async_nats::jetstream::new(client.clone());
    let bar = backup::progress(backup::collect::estimate(&js).await, "reading", json);
    let tick = |n: u64| bar.inc(n);
    let contents = backup::collect::collect(&js, &tick).await?;
    bar.finish_and_clear();
    let (bytes, digest) = backup::write_file(file, &contents, key.as_ref())?;
    let summary = serde_json::json!({
        "file": file.display().to_string(),
        "bytes": bytes,
        "sha256": digest,
        "config_seq": contents.manifest.config_seq,
        "environments": contents.manifest.versions.len(),
        "kv_records": contents.kv.len(),
        "data_keys": contents.data_keys.len(),
        "audit_records": contents.audit.len(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    if json {
        println!("{summary}");
    } else {
        println!(
            "backup {}: {} environments at config sequence {}, {} KV records, {} data keys, {} audit records, {bytes} bytes in {:.1}s (sha256 {digest})",
            file.display(),
            contents.manifest.versions.len(),
            contents.manifest.config_seq,
            contents.kv.len(),
            contents.data_keys.len(),
            contents.audit.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

async fn restore_from(
    client: &async_nats::Client,
    file: &Path,
    contents: &backup::Contents,
    force: bool,
    replicas: usize,
    json: bool,
) -> Result<(), CliError> {
    let started = Instant::now();
    let js = async_nats::jetstream::new(client.clone());
    backup::restore::check_no_validator(client).await?;
    let occupied = backup::restore::occupied(&js).await?;
    if !occupied.is_empty() && !force {
        let list: Vec<String> = occupied
            .iter()
            .map(|(s, n)| format!("{s} ({n} messages)"))
            .collect();
        return Err(BackupError::NotEmpty(format!(
            "the cluster is not empty: {}; restore only into an empty cluster, or give --force to delete that state first",
            list.join(", ")
        ))
        .into());
    }
    backup::restore::clear(&js, &occupied).await?;
    let replicas = match replicas {
        0 if client.server_info().connect_urls.len() >= 3 => 3,
        0 => 1,
        n => n,
    };
    let total = (contents.kv.len() + contents.data_keys.len() + contents.audit.len()) as u64;
    let bar = backup::progress(total, "writing", json);
    let tick = |n: u64| bar.inc(n);
    let restored =
        backup::restore::write(client, contents, BucketOptions { replicas }, &tick).await?;
    bar.finish_and_clear();
    if json {
        println!(
            "{}",
            serde_json::json!({"file": file.display().to_string(), "restored": restored, "versions": contents.manifest.versions, "seconds": started.elapsed().as_secs_f64()})
        );
    } else {
        println!(
            "restored {}: {} environments, {} KV records, {} data keys, {} audit records in {:.1}s",
            file.display(),
            contents.manifest.versions.len(),
            restored.kv,
            restored.data_keys,
            restored.audit,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Prints the sites' lag lines (nothing when no site is watched).
pub fn print_sites(sites: &[SiteLag]) {
    for s in sites {
        let behind = s
            .versions_behind
            .map_or_else(|| "?".to_owned(), |v| v.to_string());
        let active = s
            .mirror_active_seconds
            .map_or_else(|| "never".to_owned(), |a| format!("{a:.1}s ago"));
        let state = if s.reachable {
            "reachable"
        } else {
            "UNREACHABLE"
        };
        println!(
            "site {:<16} {state:<11} versions behind {behind:>6}, mirror last heard from the hub {active}{}",
            s.site,
            s.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }
}
