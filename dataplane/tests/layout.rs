//! The crate's folders depend on each other one way only: `front` →
//! `proxy` → `stream`, and `config` under all of them (see `src/lib.rs`).

use std::path::Path;

/// What each folder may use besides itself.
const MAY_USE: &[(&str, &[&str])] = &[
    ("config", &[]),
    ("stream", &["config"]),
    ("proxy", &["stream", "config"]),
    ("front", &["proxy", "stream", "config"]),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn folders_use_only_the_folders_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (folder, may_use) in MAY_USE {
        let mut files = Vec::new();
        rust_files(&src.join(folder), &mut files);
        assert!(!files.is_empty(), "no files in src/{folder}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (number, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue; // a doc link is not a dependency
                }
                for (other, _) in MAY_USE {
                    let used = [format!("crate::{other}::"), format!("crate::{other}}}")]
                        .iter()
                        .any(|pattern| line.contains(pattern.as_str()))
                        || line.contains(&format!("crate::{{{other}"));
                    if used && other != folder && !may_use.contains(other) {
                        wrong.push(format!(
                            "{}:{}: {folder} uses {other}: {}",
                            file.strip_prefix(&src).unwrap().display(),
                            number + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
