//! Drift: where live config differs from the files, with who/when/why of the live value, and
//! the YAML edits that bring the files to the live state (a patch for review). Pure.

use std::collections::BTreeMap;

use mycosynth_subscriber::wire::{GetOutcome, ValueRecord};
use serde_json::Value;

use super::repo::{parse, EnvFile, PARENT_KEY};

/// One key whose live value differs from its file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DriftEntry {
    /// Namespace.
    pub namespace: String,
    /// Environment.
    pub environment: String,
    /// The file (relative to the repository root).
    pub file: String,
    /// The key ([`PARENT_KEY`] for the parent declaration).
    pub key: String,
    /// Its line in the file, when it is in the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The value in the file (absent: not in the file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_value: Option<Value>,
    /// The live value (absent: not set live).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_value: Option<Value>,
    /// The live value's record: who set it, when, why, and whether as an emergency override.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<ValueRecord>,
}

/// Every difference between a file and the live state of its environment, sorted by key.
pub fn compare(file: &EnvFile, live: &GetOutcome) -> Vec<DriftEntry> {
    let live_values: BTreeMap<&str, &ValueRecord> =
        live.values.iter().map(|(k, r)| (k.as_str(), r)).collect();
    let mut keys: Vec<&str> = file
        .values
        .keys()
        .map(String::as_str)
        .chain(live_values.keys().copied())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let entry = |key: &str, file_value: Option<Value>, live_value: Option<Value>| DriftEntry {
        namespace: file.namespace.clone(),
        environment: file.environment.clone(),
        file: file.path.clone(),
        key: key.to_owned(),
        line: file.line_of(key),
        file_value,
        live_value,
        live: live_values.get(key).map(|r| (*r).clone()),
    };
    let mut out: Vec<DriftEntry> = keys
        .into_iter()
        .filter_map(|key| {
            let in_file = file.values.get(key);
            let in_live = live_values.get(key).map(|r| &r.value);
            (in_file != in_live).then(|| entry(key, in_file.cloned(), in_live.cloned()))
        })
        .collect();
    if file.parent != live.parent {
        out.push(entry(
            PARENT_KEY,
            file.parent.clone().map(Value::String),
            live.parent.clone().map(Value::String),
        ));
    }
    out
}

/// The file's text edited to hold exactly the live values (and live parent): changed keys are
/// rewritten in place, keys set only live are appended, keys deleted live are removed.
/// Comments and the order of untouched keys are kept. Err when the edit cannot be made exact.
pub fn patched_text(file: &EnvFile, entries: &[DriftEntry]) -> Result<String, String> {
    let mut lines: Vec<String> = file.text.lines().map(str::to_owned).collect();
    let mut appended = Vec::new();
    for entry in entries {
        let block = block_of(&lines, &entry.key);
        match (&entry.live_value, block) {
            (Some(value), Some((start, end))) => {
                lines.splice(start..end, [render(&entry.key, value)?]);
            }
            (Some(value), None) => appended.push(render(&entry.key, value)?),
            (None, Some((start, end))) => {
                lines.drain(start..end);
            }
            (None, None) => {}
        }
    }
    lines.extend(appended);
    let mut text = lines.join("\n");
    text.push('\n');
    // The edit must parse back to the live state, or it is not offered.
    let (values, parent) = parse(&file.path, &text).map_err(|f| f.message)?;
    let mut expected = file.values.clone();
    let mut expected_parent = file.parent.clone();
    for entry in entries {
        if entry.key == PARENT_KEY {
            expected_parent = entry
                .live_value
                .as_ref()
                .and_then(Value::as_str)
                .map(str::to_owned);
            continue;
        }
        match &entry.live_value {
            Some(v) => expected.insert(entry.key.clone(), v.clone()),
            None => expected.remove(&entry.key),
        };
    }
    if values != expected || parent != expected_parent {
        return Err(format!(
            "{}: cannot rewrite the file exactly; edit it by hand",
            file.path
        ));
    }
    Ok(text)
}

/// The lines `[start, end)` of the top-level entry of `key`: its line and the indented or
/// sequence lines that continue it.
fn block_of(lines: &[String], key: &str) -> Option<(usize, usize)> {
    let start = super::repo::line_of(&lines.join("\n"), key)? - 1;
    let mut end = start + 1;
    while end < lines.len() {
        let line = &lines[end];
        if line.starts_with(' ') || line.starts_with('\t') || line.starts_with("- ") {
            end += 1;
        } else {
            break;
        }
    }
    Some((start, end))
}

/// `key: value` on one line: YAML for plain scalars, JSON (valid YAML flow) otherwise.
fn render(key: &str, value: &Value) -> Result<String, String> {
    let text = match value {
        Value::String(_) => serde_yaml_ng::to_string(value).map_err(|e| e.to_string())?,
        other => other.to_string(),
    };
    let text = text.trim_end();
    if text.contains('\n') {
        Ok(format!("{key}: {value}"))
    } else {
        Ok(format!("{key}: {text}"))
    }
}

/// A unified diff (`git apply`-able, paths relative to the repository root) from `old` to `new`.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycosynth_subscriber::wire::{ChangeMeta, ChangeSource};
    use serde_json::json;

    fn record(value: Value) -> ValueRecord {
        ValueRecord {
            value,
            version: 2,
            meta: ChangeMeta {
                change_id: "c".into(),
                author: "oncall".into(),
                time: "t".into(),
                time_us: 1,
                reason: "incident".into(),
                source: ChangeSource::Cli,
                git_commit: None,
                request_id: None,
                emergency: true,
                approved_by: Vec::new(),
                change_request: None,
            },
        }
    }

    #[test]
    fn drift_and_its_patch() {
        let text = "# pool\na: 1\nb:\n  - x\n  - y\nc: keep\n";
        let (values, parent) = parse("config/n/e.yaml", text).unwrap();
        let file = EnvFile {
            namespace: "n".into(),
            environment: "e".into(),
            path: "config/n/e.yaml".into(),
            text: text.into(),
            values,
            parent,
        };
        let live = GetOutcome {
            version: 2,
            values: vec![
                ("a".into(), record(json!(5))),
                ("c".into(), record(json!("keep"))),
                ("d".into(), record(json!("yes"))),
            ],
            parent: None,
        };
        let entries = compare(&file, &live);
        let keys: Vec<_> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "d"]);
        assert_eq!(entries[0].line, Some(2));
        let patched = patched_text(&file, &entries).unwrap();
        assert_eq!(patched, "# pool\na: 5\nc: keep\nd: yes\n");
        let diff = unified_diff(&file.path, &file.text, &patched);
        assert!(
            diff.starts_with("--- a/config/n/e.yaml\n+++ b/config/n/e.yaml\n"),
            "{diff}"
        );
    }
}
