//! ARCHITECTURE.md stays true: every file or folder it names in backticks exists, looked up
//! under the folders its section is about (`## sinks/ — ...` names files under `sinks/`) or
//! from the repository's root.

use std::path::{Path, PathBuf};

/// Every file and folder under `dir`, as paths relative to `root`, skipping build output.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name == "target" || name.starts_with('.') {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        if path.is_dir() {
            out.push(format!("{rel}/"));
            walk(root, &path, out);
        } else {
            out.push(rel);
        }
    }
}

/// The backticked names in `line` that look like paths of the repository.
fn paths_in(line: &str) -> Vec<String> {
    line.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| !t.contains('<') && !t.contains(' '))
        .filter(|t| t.ends_with('/') || [".rs", ".toml", ".md"].iter().any(|e| t.ends_with(e)))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_path_architecture_names_exists() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    let mut sections: Vec<String> = Vec::new();
    let mut named = 0;
    let mut missing = Vec::new();
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            sections = heading
                .split([' ', ','])
                .filter(|w| w.ends_with('/') && !w.starts_with('`'))
                .map(str::to_string)
                .collect();
            continue;
        }
        for token in paths_in(line) {
            named += 1;
            let found = files.iter().any(|f| {
                *f == token
                    || (f.ends_with(&format!("/{token}"))
                        && (sections.is_empty() || sections.iter().any(|s| f.starts_with(s.as_str()))))
            });
            if !found {
                missing.push(format!("`{token}` (section {sections:?})"));
            }
        }
    }
    assert!(
        named > 40,
        "ARCHITECTURE.md names only {named} paths: the walk-through is gone?"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn a_path_that_does_not_exist_is_noticed() {
    assert_eq!(
        paths_in("see `operators/src/expand.rs` and `x < y`"),
        vec!["operators/src/expand.rs"]
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(!root.join("operators/src/expand.rs").exists());
}
