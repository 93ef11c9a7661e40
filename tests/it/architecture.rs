//! The layering of `src/`: a top-level module may use only modules below it in [`LAYERS`]. Any order of the
//! modules in which every `crate::…` reference points downwards rules out import cycles, so this test is
//! what keeps them out. A new module gets a place in the list (and in `src/lib.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first.
const LAYERS: [&str; 18] = [
    "secret",
    "core",
    "error",
    "config",
    "telemetry",
    "store",
    "ratelimit",
    "openapi",
    "search",
    "upstream",
    "state",
    "auth",
    "oauth",
    "feedback",
    "mcp",
    "http",
    "admin",
    // Test-only entry points (the `test-hooks` feature), above everything they start.
    "testing",
];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`None` for `lib.rs` and `main.rs`).
fn owner(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative
        .components()
        .next()?
        .as_os_str()
        .to_str()?
        .to_owned();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(module) => Some(module.to_owned()),
        None => Some(first),
    }
}

/// Every top-level module named as `crate::name` in `text` (macro `$crate::` paths included: they resolve
/// to the same crate).
fn referenced_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = text[at + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

/// Each (file, module used) pair that points upwards or outside the layer list.
fn violations(src: &Path) -> Vec<String> {
    let rank = |name: &str| LAYERS.iter().position(|layer| *layer == name);
    let mut files = Vec::new();
    source_files(src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let Some(module) = owner(src, &file) else {
            continue;
        };
        let Some(own_rank) = rank(&module) else {
            found.push(format!(
                "{}: module `{module}` has no place in LAYERS",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for used in referenced_modules(&text) {
            if used == module {
                continue;
            }
            match rank(&used) {
                Some(used_rank) if used_rank < own_rank => {}
                Some(_) => found.push(format!(
                    "{}: `{module}` uses `crate::{used}`, which is above it",
                    file.display()
                )),
                None => found.push(format!(
                    "{}: `{module}` uses `crate::{used}`, which has no place in LAYERS",
                    file.display()
                )),
            }
        }
    }
    found
}

#[test]
fn no_module_uses_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn lib_declares_exactly_the_layered_modules() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|line| {
            line.strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("pub(crate) mod "))
        })
        .map(|rest| rest.trim_end_matches(';'))
        .collect();
    assert_eq!(declared, BTreeSet::from(LAYERS));
}

#[test]
fn the_check_sees_an_upward_reference() {
    // A lower module reaching up must be reported: build a throw-away tree with one such edge.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("store")).unwrap();
    std::fs::write(
        dir.path().join("store/mod.rs"),
        "use crate::core::now_ms;\nfn f() { let _ = crate::http::router; }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("core.rs"), "//! nothing above\n").unwrap();
    std::fs::write(dir.path().join("lib.rs"), "use crate::http::x;\n").unwrap();
    let found = violations(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("`store` uses `crate::http`"), "{found:?}");
    assert_eq!(
        referenced_modules("$crate::store::q; my_crate::b; crate::store::r"),
        BTreeSet::from(["store".to_owned()])
    );
}
