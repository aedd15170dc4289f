//! The dependency rule of ARCHITECTURE.md, checked over the source: each top-level module imports only modules
//! of a lower layer, and inside `proxy` the shared rooms import no handler and handlers import only the handlers
//! below them. What counts is every `crate::…` path (and `super::…` inside `proxy`) outside `#[cfg(test)]` code;
//! tests may reach upwards (to name the error a module's failure becomes, for instance).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer: a module may import modules of a strictly lower layer. Modules of the same layer
/// do not import each other.
const LAYERS: &[(&str, u8)] = &[
    ("util", 0),
    ("metrics", 0),
    ("signal", 0),
    ("s3", 1),
    ("config", 2),
    ("sigv4", 3),
    ("crypto", 3),
    ("error", 4),
    ("upstream", 5),
    ("store", 6),
    ("proxy", 7),
    ("server", 8),
    ("cli", 9),
];

/// The rooms of `proxy` by layer, the same way. Layer 0 and 1 are shared by every handler (response bodies and
/// scrubbing, request bodies, ranges, rate limits, object responses, the front door); handlers come after, the
/// dispatch (`mod`) last.
const PROXY_ROOMS: &[(&str, u8)] = &[
    ("body", 0),
    ("etag", 0),
    ("range", 0),
    ("response", 0),
    ("limit", 0),
    ("records", 0),
    ("settings", 0),
    ("object", 1),
    ("front", 1),
    ("s3ec", 2),
    ("forward", 3),
    ("write", 3),
    ("listing", 3),
    ("buckets", 3),
    ("post", 3),
    ("multipart", 3),
    ("read", 4),
    ("copy", 5),
    ("maintenance", 6),
    ("mod", 7),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code before its first `#[cfg(test)]`, without comments.
fn production_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The first path segment after each occurrence of `prefix`, including each item of a `prefix{a, b::c}` group.
fn first_segments(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        if at > 0 && code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `x::crate::` or `super::super::` seen from its second half
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 || (depth == 1 && c == ',') {
                    out.insert(ident(item.trim()));
                    item.clear();
                    if depth == 0 {
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty() && !matches!(s.as_str(), "super" | "self" | "crate"));
    out
}

fn layer_of(table: &[(&str, u8)], name: &str) -> Option<u8> {
    table.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

/// Every import that breaks the layering of `table`, as `from -> to`.
fn violations(table: &[(&str, u8)], imports: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut bad = Vec::new();
    for (from, tos) in imports {
        let Some(own) = layer_of(table, from) else {
            bad.push(format!("{from}: not in the table"));
            continue;
        };
        for to in tos {
            match layer_of(table, to) {
                Some(l) if l < own => {}
                Some(_) => bad.push(format!("{from} -> {to}")),
                None => {} // an item of the parent (a type or function), not a module
            }
        }
    }
    bad
}

#[test]
fn each_module_imports_only_the_layers_below_it() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &files {
        let rel = path.strip_prefix(src()).unwrap();
        let top = rel.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_owned();
        if matches!(top.as_str(), "lib" | "main" | "test_util") {
            continue;
        }
        let mut used = first_segments(&production_code(path), "crate::");
        used.remove(&top);
        imports.entry(top).or_default().extend(used);
    }
    assert!(imports.len() >= LAYERS.len() - 1, "the walk found the modules: {imports:?}");
    for (name, _) in LAYERS {
        assert!(imports.contains_key(*name), "{name} is in src/");
    }
    assert_eq!(violations(LAYERS, &imports), Vec::<String>::new(), "imports against the layers: {imports:#?}");
}

#[test]
fn proxy_rooms_import_only_shared_rooms_and_the_handlers_below_them() {
    let proxy = src().join("proxy");
    let mut files = Vec::new();
    rust_files(&proxy, &mut files);
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &files {
        let rel = path.strip_prefix(&proxy).unwrap();
        let in_folder = rel.components().count() > 1;
        let room = rel.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_owned();
        let code = production_code(path);
        let mut used = first_segments(&code, "crate::proxy::");
        // `super::` names a sibling room from a top-level room, and from a folder's mod.rs; `super::super::`
        // from the other files of a folder.
        let is_folder_root = rel.file_name().is_some_and(|f| f == "mod.rs");
        if !in_folder || is_folder_root {
            used.extend(first_segments(&code, "super::"));
        } else {
            used.extend(first_segments(&code, "super::super::"));
        }
        used.retain(|u| u != &room && u.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
        imports.entry(room).or_default().extend(used);
    }
    for (name, _) in PROXY_ROOMS {
        assert!(imports.contains_key(*name), "{name} is a room of src/proxy/");
    }
    assert_eq!(
        violations(PROXY_ROOMS, &imports),
        Vec::<String>::new(),
        "proxy imports against the rooms: {imports:#?}"
    );
}

#[test]
fn the_layering_check_sees_grouped_and_nested_imports() {
    let code = "use crate::{a, b::{c, d}};\nuse crate::e::f;\nfn x() { crate::g(); super::super::h(); }";
    let found = first_segments(code, "crate::");
    assert_eq!(found, ["a", "b", "e", "g"].into_iter().map(String::from).collect());
    assert_eq!(first_segments(code, "super::"), BTreeSet::new(), "super::super:: is not super::");
    assert_eq!(first_segments(code, "super::super::"), ["h".to_owned()].into_iter().collect());
    let imports = BTreeMap::from([("s3".to_owned(), BTreeSet::from(["sigv4".to_owned()]))]);
    assert_eq!(violations(LAYERS, &imports), vec!["s3 -> sigv4".to_owned()]);
}
