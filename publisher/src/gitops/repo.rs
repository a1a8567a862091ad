//! Reading a config repository: `config/<namespace>/<env>.yaml` and
//! `schemas/<namespace>.schema.json`, each key with the YAML line it is on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The file-level key that declares an environment's parent (reserved: never a config key).
pub const PARENT_KEY: &str = "_meta.parent";

/// One problem found in a repository: which file, which key (and line), which rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// Path of the file, relative to the repository root.
    pub file: String,
    /// The config key (or `(file)` for the file as a whole).
    pub key: String,
    /// 1-based line in the file, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The rule's short name, as in the validator's violations.
    pub rule: String,
    /// One line for people.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: ", self.file)?,
            None => write!(f, "{}: ", self.file)?,
        }
        write!(
            f,
            "key {:?} broke rule {:?}: {}",
            self.key, self.rule, self.message
        )
    }
}

/// One environment's file.
#[derive(Debug, Clone)]
pub struct EnvFile {
    /// Namespace (the directory name).
    pub namespace: String,
    /// Environment (the file stem).
    pub environment: String,
    /// Path relative to the repository root (`config/<ns>/<env>.yaml`).
    pub path: String,
    /// The file's text, as read.
    pub text: String,
    /// Config keys and values (without [`PARENT_KEY`]).
    pub values: BTreeMap<String, Value>,
    /// The declared parent environment.
    pub parent: Option<String>,
}

impl EnvFile {
    /// The 1-based line on which `key` is written at top level, if found.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        line_of(&self.text, key)
    }
}

/// A namespace's schema file.
#[derive(Debug, Clone)]
pub struct SchemaFile {
    /// Path relative to the repository root.
    pub path: String,
    /// The parsed JSON (not yet compiled).
    pub raw: Value,
}

/// A config repository, read.
#[derive(Debug, Clone, Default)]
pub struct ConfigRepo {
    /// The directory.
    pub root: PathBuf,
    /// Every environment file, sorted by (namespace, environment).
    pub files: Vec<EnvFile>,
    /// Schemas by namespace.
    pub schemas: BTreeMap<String, SchemaFile>,
}

/// Why a repository cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The directory or a file cannot be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// What.
        path: String,
        /// Why.
        message: String,
    },
    /// There is no `config/` directory.
    #[error("{0} has no config/ directory (expected config/<namespace>/<env>.yaml)")]
    NoConfig(String),
}

fn io(path: &Path, err: std::io::Error) -> RepoError {
    RepoError::Io {
        path: path.display().to_string(),
        message: err.to_string(),
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, RepoError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    out.sort();
    Ok(out)
}

/// Reads the repository at `root`. Files that cannot be parsed, or that are not where the
/// convention puts them, are findings; only an unreadable directory is an error.
pub fn load(root: &Path) -> Result<(ConfigRepo, Vec<Finding>), RepoError> {
    let config_dir = root.join("config");
    if !config_dir.is_dir() {
        return Err(RepoError::NoConfig(root.display().to_string()));
    }
    let mut repo = ConfigRepo {
        root: root.to_path_buf(),
        ..ConfigRepo::default()
    };
    let mut findings = Vec::new();
    for ns_dir in sorted_entries(&config_dir)? {
        let rel = relative(root, &ns_dir);
        if !ns_dir.is_dir() {
            findings.push(layout(
                &rel,
                "files belong in config/<namespace>/<env>.yaml",
            ));
            continue;
        }
        let namespace = file_name(&ns_dir);
        for path in sorted_entries(&ns_dir)? {
            let rel = relative(root, &path);
            let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
            if !path.is_file() || !is_yaml {
                findings.push(layout(&rel, "expected <env>.yaml files only"));
                continue;
            }
            let environment = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            match parse(&rel, &text) {
                Ok((values, parent)) => repo.files.push(EnvFile {
                    namespace: namespace.clone(),
                    environment,
                    path: rel,
                    text,
                    values,
                    parent,
                }),
                Err(finding) => findings.push(finding),
            }
        }
    }
    let schema_dir = root.join("schemas");
    if schema_dir.is_dir() {
        for path in sorted_entries(&schema_dir)? {
            let name = file_name(&path);
            let Some(namespace) = name.strip_suffix(".schema.json") else {
                continue;
            };
            let rel = relative(root, &path);
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            match serde_json::from_str::<Value>(&text) {
                Ok(raw) => {
                    repo.schemas
                        .insert(namespace.to_owned(), SchemaFile { path: rel, raw });
                }
                Err(e) => findings.push(Finding {
                    file: rel,
                    key: "(schema)".into(),
                    line: Some(e.line()),
                    rule: "json".into(),
                    message: format!("not valid JSON: {e}"),
                }),
            }
        }
    }
    Ok((repo, findings))
}

fn layout(file: &str, message: &str) -> Finding {
    Finding {
        file: file.to_owned(),
        key: "(file)".into(),
        line: None,
        rule: "layout".into(),
        message: message.to_owned(),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Parses one environment file: a YAML mapping of config keys; [`PARENT_KEY`] names the parent.
pub fn parse(file: &str, text: &str) -> Result<(BTreeMap<String, Value>, Option<String>), Finding> {
    let bad = |line: Option<usize>, key: &str, message: String| Finding {
        file: file.to_owned(),
        key: key.to_owned(),
        line,
        rule: "format".into(),
        message,
    };
    let parsed: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        bad(line, "(file)", format!("not valid YAML: {e}"))
    })?;
    let mut values: BTreeMap<String, Value> = match parsed {
        Value::Object(map) => map.into_iter().collect(),
        Value::Null => BTreeMap::new(),
        _ => {
            return Err(bad(
                None,
                "(file)",
                "must be a mapping of config keys to values".into(),
            ))
        }
    };
    let parent = match values.remove(PARENT_KEY) {
        None => None,
        Some(Value::String(parent)) => Some(parent),
        Some(_) => {
            return Err(bad(
                line_of(text, PARENT_KEY),
                PARENT_KEY,
                "the parent must be an environment name".into(),
            ))
        }
    };
    Ok((values, parent))
}

/// The 1-based line on which `key` starts at column 0 (`key:`, `"key":` or `'key':`).
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let forms = [
        format!("{key}:"),
        format!("\"{key}\":"),
        format!("'{key}':"),
    ];
    text.lines()
        .position(|line| forms.iter().any(|f| line.starts_with(f.as_str())))
        .map(|i| i + 1)
}

/// The commit checked out in `dir` when it is inside a git work tree (`<sha>`, or
/// `<sha>-dirty` when tracked files have uncommitted changes); None otherwise.
pub fn git_commit(dir: &Path) -> Option<String> {
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let sha = run(&["rev-parse", "--verify", "HEAD"])?;
    let dirty = run(&["status", "--porcelain", "--untracked-files=no", "--", "."])
        .is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{sha}-dirty") } else { sha })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_with_their_lines() {
        let text = "# comment\na.b: 1\n\"c.d\": x\n_meta.parent: base\n";
        let (values, parent) = parse("f.yaml", text).unwrap();
        assert_eq!(values.len(), 2);
        assert_eq!(parent.as_deref(), Some("base"));
        assert_eq!(line_of(text, "a.b"), Some(2));
        assert_eq!(line_of(text, "c.d"), Some(3));
        assert_eq!(line_of(text, "a"), None);
        let err = parse("f.yaml", "a: [1\n").unwrap_err();
        assert_eq!((err.rule.as_str(), err.key.as_str()), ("format", "(file)"));
        assert!(parse("f.yaml", "- 1\n").is_err());
        assert!(parse("f.yaml", "_meta.parent: [1]\n").is_err());
    }
}
