//! The module graph of `publisher/src/` as an invariant (ARCHITECTURE.md, "Module graph"):
//! each part uses only the parts listed for it, and no module imports a module that imports
//! it back (a parent `mod.rs` counts as importing the children it re-exports).
//!
//! Read from the source: every `crate::…` and `super::…` path outside `#[cfg(test)]` code is
//! resolved to the deepest module file it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which parts each part may use (besides itself). `lib.rs` and `main.rs` are not parts.
const ALLOWED: &[(&str, &[&str])] = &[
    ("failure", &[]),
    ("clock", &[]),
    ("validate", &["failure"]),
    ("store", &["failure", "validate"]),
    ("access", &["failure", "clock", "store", "validate"]),
    // The auth callout answers nats-server alone: it needs only the wire contract.
    ("callout", &[]),
    ("audit", &["access", "clock", "failure", "store"]),
    ("fleet", &["clock", "store"]),
    ("site", &["clock", "failure", "store"]),
    ("backup", &["access", "audit", "clock", "failure", "store"]),
    (
        "validator",
        &[
            "access", "audit", "clock", "failure", "fleet", "site", "store", "validate",
        ],
    ),
    ("client", &["access", "failure", "validate", "validator"]),
    ("gitops", &["validate"]),
    ("sidecar", &[]),
    // The console is a client of the validator's API; `store` and `validate` only for the
    // pure `state_at` and `difference` (diffs of any two versions).
    ("console", &["client", "clock", "store", "validate"]),
    (
        "cli",
        &[
            "access",
            "audit",
            "backup",
            "callout",
            "client",
            "clock",
            "console",
            "failure",
            "fleet",
            "gitops",
            "sidecar",
            "site",
            "store",
            "validate",
            "validator",
        ],
    ),
];

type Module = Vec<String>;

fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut segments: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if segments.last().is_some_and(|s| s == "mod") {
                segments.pop();
            }
            if segments == ["lib"] || segments == ["main"] {
                segments.clear();
            }
            found.insert(segments, path);
        }
    }
    found
}

/// The source of a file without its tests and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path starting with `crate::` or `super::` in `code`, braces expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(root) {
            let start = from + at;
            from = start + root.len();
            let before = code[..start].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let head = root.trim_end_matches(':').to_owned();
            expand(&code[from..], vec![head], &mut out);
        }
    }
    out
}

/// Reads one path (or a `{a, b::c}` group) at the start of `rest`, after `prefix`.
fn expand(rest: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut item_start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(group[item_start..i].trim_start(), prefix.clone(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(group[item_start..i].trim_start(), prefix.clone(), out);
                    item_start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let ident: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() {
        out.push(prefix);
        return;
    }
    let mut path = prefix;
    path.push(ident.clone());
    match rest[ident.len()..].strip_prefix("::") {
        Some(more) => expand(more, path, out),
        None => out.push(path),
    }
}

/// The deepest module `path` (as written in `module`) names.
fn resolve(module: &Module, path: &[String], known: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let (mut absolute, rest): (Module, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("super") => {
            // `super` is the enclosing module, for `a/b.rs` and `a/b/mod.rs` alike.
            let mut absolute = module[..module.len().saturating_sub(1)].to_vec();
            let mut rest = &path[1..];
            while rest.first().is_some_and(|s| s == "super") {
                absolute.pop();
                rest = &rest[1..];
            }
            (absolute, rest)
        }
        _ => return None,
    };
    absolute.extend(rest.iter().cloned());
    (1..=absolute.len())
        .rev()
        .map(|n| absolute[..n].to_vec())
        .find(|m| known.contains_key(m))
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    let mut edges = BTreeMap::new();
    for (module, file) in &known {
        let code = code(file);
        let mut uses = BTreeSet::new();
        for path in paths(&code) {
            if let Some(target) = resolve(module, &path, &known) {
                if &target != module {
                    uses.insert(target);
                }
            }
        }
        // A parent re-exporting a child uses it.
        for line in code.lines() {
            if let Some(rest) = line.trim().strip_prefix("pub use ") {
                let child: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let mut target = module.clone();
                target.push(child);
                if known.contains_key(&target) {
                    uses.insert(target);
                }
            }
        }
        edges.insert(module.clone(), uses);
    }
    edges
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "lib".into()
    } else {
        module.join("::")
    }
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let edges = graph();
    let mut cycles = Vec::new();
    // Depth-first search for a path back to the start, from every module.
    for start in edges.keys().filter(|m| !m.is_empty()) {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    let mut cycle: Vec<String> = trail.iter().map(name).collect();
                    cycle.push(name(start));
                    cycles.push(cycle.join(" -> "));
                } else if !next.is_empty() && seen.insert(next.clone()) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    cycles.sort();
    cycles.dedup();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn each_part_uses_only_the_parts_below_it() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, uses) in graph() {
        let Some(part) = module.first() else { continue };
        let Some(may) = allowed.get(part.as_str()) else {
            wrong.push(format!(
                "part {part} is not in the module graph (add it to ALLOWED and ARCHITECTURE.md)"
            ));
            continue;
        };
        for used in uses {
            let Some(other) = used.first() else { continue };
            if other != part && !may.contains(&other.as_str()) {
                wrong.push(format!("{} uses {}", name(&module), name(&used)));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_reader_finds_paths_in_groups_and_resolves_super() {
    let found =
        paths("use crate::store::{committer::{self, Receipt}, State};\nlet x = super::a::b();");
    assert!(found.contains(&vec![
        "crate".into(),
        "store".into(),
        "committer".into(),
        "self".into()
    ]));
    assert!(found.contains(&vec!["crate".into(), "store".into(), "State".into()]));
    assert!(found.contains(&vec!["super".into(), "a".into(), "b".into()]));
    let known: BTreeMap<Module, PathBuf> = [
        (vec!["store".to_owned()], PathBuf::new()),
        (
            vec!["store".to_owned(), "committer".to_owned()],
            PathBuf::new(),
        ),
    ]
    .into();
    let module = vec!["store".to_owned(), "state".to_owned()];
    let path: Vec<String> = ["super", "committer", "Receipt"].map(String::from).into();
    assert_eq!(
        resolve(&module, &path, &known),
        Some(vec!["store".to_owned(), "committer".to_owned()])
    );
}
