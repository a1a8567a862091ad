//! A file the callout reads (tokens, identities, a JWKS), read again when it changes, so that
//! adding a service or rotating an issuer's keys needs no restart of anything. A change is
//! noticed at the first use at least [`RECHECK`] after the last look. An edit that does not
//! parse is logged and counted, and the last good contents stay in force: a typo neither
//! locks the fleet out nor lets anyone new in.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often a file is looked at (its modification time and length) at most.
pub const RECHECK: Duration = Duration::from_secs(1);

/// The parsed contents of a file, kept current.
pub struct Reloading<T> {
    path: PathBuf,
    parse: fn(&str) -> Result<T, String>,
    state: Mutex<State<T>>,
}

struct State<T> {
    value: Arc<T>,
    /// Modification time and length of the file the value was read from.
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn load<T>(path: &Path, parse: fn(&str) -> Result<T, String>) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

impl<T> Reloading<T> {
    /// Reads and parses `path` now; an error here is the caller's to report (start-up).
    pub fn open(path: PathBuf, parse: fn(&str) -> Result<T, String>) -> Result<Self, String> {
        let stamp = stamp(&path);
        let value = Arc::new(load(&path, parse)?);
        Ok(Reloading {
            path,
            parse,
            state: Mutex::new(State {
                value,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The current contents, read again first if the file changed.
    pub fn get(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            let now = stamp(&self.path);
            if now != state.stamp {
                state.stamp = now;
                match load(&self.path, self.parse) {
                    Ok(value) => {
                        tracing::info!(file = %self.path.display(), "reloaded");
                        state.value = Arc::new(value);
                    }
                    Err(err) => {
                        metrics::counter!("mycosynth_callout_reload_errors_total").increment(1);
                        tracing::error!(error = %err, "cannot reload; the previous contents stay in force");
                    }
                }
            }
        }
        Arc::clone(&state.value)
    }
}
