//! The layering rule, checked: every `crate::…` path in `src/` must name a
//! module of the same layer or a lower one (the layers are in `lib.rs`'s
//! doc). Test modules are not read: they may build whatever they test.
//!
//! The edges that still run back up are listed in [`KNOWN_BACK_EDGES`].
//! The list only shrinks: a new back edge fails, and so does a listed one
//! that is gone (take it off the list).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom up; a module may use its own layer and those below it.
const LAYERS: &[&[&str]] = &[
    &["clock", "rpc", "crypto", "token", "scan", "config", "pb"],
    &["kek", "store", "erasure", "metrics", "notify"],
    &["audit", "policy", "anomaly"],
    &["vault"],
    &["app", "exposure"],
    &["api"],
    &["cli"],
];

/// `(file, module it reaches up to)` pairs that break the rule today, each
/// with what ends it.
const KNOWN_BACK_EDGES: &[(&str, &str)] = &[
    // `PostgresConfig` and the ledger location are schema, built into
    // options by the composition root, not by the config.
    ("config/erasure.rs", "store"),
    ("config/erasure.rs", "erasure"),
    ("config/storage.rs", "store"),
    // The registry must be a leaf; the scrape (alerts, the vault's
    // gauges, the denial flood counter) belongs to the composition root.
    ("metrics.rs", "api"),
    ("metrics.rs", "policy"),
    ("metrics.rs", "vault"),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a file under `src/` belongs to.
fn module_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

/// The file's text up to its unit tests, with comments dropped.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests {"))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Every top-level module a `crate::` path in `code` names, including
/// those inside `use crate::{a, b::c}`.
fn modules_named(code: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `tokenvault_crate::`, not ours
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            named.extend(group_heads(group));
        } else {
            named.insert(ident(rest));
        }
    }
    named.retain(|name| !name.is_empty());
    named
}

/// The first path segment of each item of a `{…}` group.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = vec![ident(group.trim_start())];
    let mut depth = 0usize;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => heads.push(ident(group[i + 1..].trim_start())),
            _ => {}
        }
    }
    heads
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// `(file, module)` for every path from a lower layer to a higher one.
fn back_edges(src: &Path) -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut edges = BTreeSet::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let module = module_of(relative);
        let Some(own) = layer_of(&module) else {
            continue; // lib.rs, main.rs, this file: the roots
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        for used in modules_named(&code_of(&text)) {
            if layer_of(&used).is_some_and(|layer| layer > own) {
                edges.insert((relative.display().to_string(), used));
            }
        }
    }
    edges
}

#[test]
fn no_module_reaches_up_to_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = back_edges(&src);
    let known: BTreeSet<(String, String)> = KNOWN_BACK_EDGES
        .iter()
        .map(|(file, module)| (file.to_string(), module.to_string()))
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "these files use a module of a higher layer (see lib.rs): {new:?}"
    );
    assert!(
        gone.is_empty(),
        "these back edges are gone: take them off KNOWN_BACK_EDGES: {gone:?}"
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let roots = ["lib", "main", "layering"];
    for entry in std::fs::read_dir(&src).expect("read src") {
        let module = module_of(Path::new(&entry.expect("entry").file_name()));
        assert!(
            roots.contains(&module.as_str()) || layer_of(&module).is_some(),
            "src/{module} has no layer in layering::LAYERS"
        );
    }
}

#[test]
fn paths_are_read_in_every_form() {
    let code = "use crate::{clock::unix_now, vault::{Vault, VaultError}};\n\
                let x = crate::api::status::to_status(e);\n\
                // crate::cli in a comment\n";
    let named = modules_named(&code_of(code));
    let expected: BTreeSet<String> = ["api", "clock", "vault"].map(String::from).into();
    assert_eq!(named, expected);
}

/// The backticked `src/…` and `tests/…` paths that `docs/architecture.md`
/// names.
fn paths_in_module_map(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.starts_with("src/") || span.starts_with("tests/"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_module_map_names_every_module_and_only_paths_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("docs/architecture.md")).expect("read the map");
    let named = paths_in_module_map(&map);
    for path in &named {
        assert!(
            root.join(path).exists(),
            "docs/architecture.md names {path}, which does not exist"
        );
    }
    for entry in std::fs::read_dir(root.join("src")).expect("read src") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        let module = name.trim_end_matches(".rs");
        if ["lib", "main", "layering"].contains(&module) {
            continue;
        }
        assert!(
            named.iter().any(|path| path == &format!("src/{name}")),
            "docs/architecture.md has no row for src/{name}"
        );
    }
}
