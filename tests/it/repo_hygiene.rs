//! The checkout itself: no merge left half done in a tracked text file.

use std::path::{Path, PathBuf};

/// Text files of the repository, outside build output and VCS data.
fn text_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "node_modules")
                && !name.starts_with("tgt")
            {
                text_files(&path, out);
            }
        } else if [
            ".rs", ".md", ".toml", ".sql", ".sh", ".json", ".yml", ".py", ".html",
        ]
        .iter()
        .any(|ext| name.ends_with(ext))
            || name == "Makefile"
        {
            out.push(path);
        }
    }
}

/// A conflict marker left by a merge (`<<<<<<< `, `>>>>>>> ` at the start
/// of a line) in any source, doc or script file fails the suite, naming it.
#[test]
fn no_merge_conflict_markers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    text_files(root, &mut files);
    assert!(files.len() > 50, "the walk found the tree: {}", files.len());
    let (open, close) = (format!("{} ", "<".repeat(7)), format!("{} ", ">".repeat(7)));
    let mut found = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if line.starts_with(&open) || line.starts_with(&close) {
                found.push(format!(
                    "{}:{}",
                    f.strip_prefix(root).unwrap().display(),
                    n + 1
                ));
            }
        }
    }
    assert!(found.is_empty(), "merge conflict markers at {found:?}");
}
