//! The layering written at the top of `src/lib.rs`, enforced: every `crate::` path (and
//! every `super::` path that climbs out of its top-level module) in non-test code under
//! `src/` must point at a layer below its own. Test code may reach up: `tests.rs` files
//! and `#[cfg(test)]` items are skipped.
//!
//! On failure it prints each offending edge with its file and line, so the fix is a
//! matter of moving the imported item down (or the importer up), never of editing the
//! table to fit.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Lowest first. A module may import only from the layers before it.
const LAYERS: &[&str] = &[
    "model",
    "sys",
    "config",
    "sample",
    "inventory",
    "account",
    "policy",
    "enforce",
    "state",
    "store",
    "report",
    "engine",
    "render",
    "api",
    "daemon",
    "cli",
];

/// One import of another top-level module: (line, module imported).
fn edges(module_path: &[String], source: &str) -> Vec<(usize, String)> {
    let code = strip(source);
    let own = module_path.first().cloned().unwrap_or_default();
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at_word = i == 0 || !is_ident(bytes[i - 1]);
        if at_word && code[i..].starts_with("crate::") {
            let line = code[..i].matches('\n').count() + 1;
            let rest = &code[i + "crate::".len()..];
            for top in tops(rest) {
                if top != own {
                    out.push((line, top));
                }
            }
            i += "crate::".len();
            continue;
        }
        if at_word && code[i..].starts_with("super::") {
            let line = code[..i].matches('\n').count() + 1;
            let mut depth = 0;
            let mut j = i;
            while code[j..].starts_with("super::") {
                depth += 1;
                j += "super::".len();
            }
            // `super` from [a, b, c] is [a, b]: reaching the root names a top-level module.
            if depth >= module_path.len() {
                for top in tops(&code[j..]) {
                    if top != own {
                        out.push((line, top));
                    }
                }
            }
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The first segments of what follows `crate::`: one name, or each of a `{…}` group's.
fn tops(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.bytes()
            .take_while(|b| is_ident(*b))
            .map(char::from)
            .collect()
    };
    if let Some(group) = rest.strip_prefix('{') {
        let mut names = Vec::new();
        let mut depth = 0;
        let mut start = true;
        for (k, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if c.is_whitespace() => {}
                _ if start && depth == 0 => {
                    let name = ident(&group[k..]);
                    if !name.is_empty() && name != "self" {
                        names.push(name);
                    }
                    start = false;
                }
                _ => {}
            }
        }
        names
    } else {
        let name = ident(rest);
        if name.is_empty() {
            Vec::new()
        } else {
            vec![name]
        }
    }
}

/// The source with comments, string and char literals blanked (newlines kept, so line
/// numbers hold) and `#[cfg(test)]` items removed.
fn strip(source: &str) -> String {
    let b = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        if source[i..].starts_with("//") {
            let end = source[i..].find('\n').map_or(b.len(), |n| i + n);
            blank(&mut out, &b[i..end]);
            i = end;
        } else if source[i..].starts_with("/*") {
            let end = source[i + 2..]
                .find("*/")
                .map_or(b.len(), |n| i + 2 + n + 2);
            blank(&mut out, &b[i..end]);
            i = end;
        } else if source[i..].starts_with("r#\"") || source[i..].starts_with("r\"") {
            let hashes = source[i + 1..].bytes().take_while(|c| *c == b'#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let open = i + 2 + hashes;
            let end = source[open..]
                .find(&close)
                .map_or(b.len(), |n| open + n + close.len());
            blank(&mut out, &b[i..end]);
            i = end;
        } else if b[i] == b'"' && (i == 0 || !is_ident(b[i - 1]) || b[i - 1] == b'b') {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(b.len());
            blank(&mut out, &b[i..end]);
            i = end;
        } else if b[i] == b'\'' && char_literal_len(&source[i..]).is_some() {
            let n = char_literal_len(&source[i..]).unwrap_or(1);
            blank(&mut out, &b[i..i + n]);
            i += n;
        } else {
            out.push(char::from(b[i]));
            i += 1;
        }
    }
    remove_test_items(&out)
}

/// `'a'`, `'\n'`, `'\u{1F600}'` (not a lifetime): its length in bytes.
fn char_literal_len(s: &str) -> Option<usize> {
    let mut chars = s.char_indices().skip(1);
    let (_, c) = chars.next()?;
    if c == '\\' {
        s[1..].find('\'').map(|n| n + 2).filter(|n| *n <= 12)
    } else {
        let (k, close) = chars.next()?;
        (close == '\'').then_some(k + 1)
    }
}

/// Blank each item under `#[cfg(test)]`: up to its `;`, or its balanced `{…}`.
fn remove_test_items(code: &str) -> String {
    let mut out = code.to_owned();
    let mut from = 0;
    while let Some(n) = out[from..].find("#[cfg(test)]") {
        let start = from + n;
        let after = start + "#[cfg(test)]".len();
        let semi = out[after..].find(';').map(|k| after + k);
        let brace = out[after..].find('{').map(|k| after + k);
        let end = match (semi, brace) {
            (Some(s), Some(b)) if s < b => s + 1,
            (Some(s), None) => s + 1,
            (_, Some(b)) => {
                let mut depth = 0;
                let mut end = out.len();
                for (k, c) in out[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, None) => out.len(),
        };
        let blanked: String = out[start..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(start..end, &blanked);
        from = end;
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b/mod.rs` → [a, b]; `src/a/c.rs` → [a, c].
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == module)
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let path = module_path(&src, file);
        let is_test = file.file_name().is_some_and(|n| n == "tests.rs");
        let Some(own) = path.first().filter(|m| *m != "lib" && *m != "main") else {
            continue;
        };
        if is_test {
            continue;
        }
        let own_rank = rank(own).unwrap_or_else(|| {
            panic!(
                "{}: top-level module {own:?} is in no layer of LAYERS",
                file.display()
            )
        });
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (line, to) in edges(&path, &text) {
            seen.insert((own.clone(), to.clone()));
            match rank(&to) {
                Some(r) if r < own_rank => {}
                _ => wrong.push(format!(
                    "{}:{line}: {own} -> {to} ({to} is not in a layer below {own})",
                    file.strip_prefix(src.parent().unwrap_or(&src))
                        .unwrap_or(file)
                        .display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that reach up a layer:\n{}",
        wrong.join("\n")
    );
    // The reader found the edges that hold the crate together (it is not blind).
    for (from, to) in [
        ("daemon", "engine"),
        ("engine", "policy"),
        ("policy", "model"),
        ("api", "store"),
    ] {
        assert!(
            seen.contains(&(from.to_owned(), to.to_owned())),
            "expected an edge {from} -> {to}; found {seen:?}"
        );
    }
}

#[test]
fn lib_rs_lists_the_modules_in_layer_order() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .unwrap_or_else(|e| panic!("src/lib.rs: {e}"));
    let listed: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    assert_eq!(
        listed, LAYERS,
        "src/lib.rs's `pub mod` lines, against this test's LAYERS"
    );
}

#[test]
fn the_reader_sees_what_it_should_and_nothing_else() {
    let p = |s: &str| -> Vec<String> { s.split('/').map(str::to_owned).collect() };
    // (module path, source, imports it must report)
    let table: &[(&str, &str, &[&str])] = &[
        ("policy/mod", "use crate::model::units::Rate;", &["model"]),
        (
            "policy/mod",
            "use crate::{model::ids::IfName, config::{Config, RuleConfig}};",
            &["model", "config"],
        ),
        (
            "policy/quota",
            "fn f() -> crate::state::Snapshot { todo!() }",
            &["state"],
        ),
        ("policy/quota", "use crate::policy::Verdict;", &[]),
        (
            "policy/quota",
            "// use crate::daemon::Agent;\n/* crate::cli */ let s = \"crate::api\";",
            &[],
        ),
        (
            "policy/quota",
            "#[cfg(test)]\nmod tests { use crate::daemon::Agent; }\nuse crate::sample::Sample;",
            &["sample"],
        ),
        (
            "policy/quota",
            "#[cfg(test)]\nuse crate::daemon::Agent;\n",
            &[],
        ),
        (
            "policy/quota",
            "use super::super::daemon::Agent;",
            &["daemon"],
        ),
        ("policy/quota", "use super::Verdict;", &[]),
        ("policy", "use super::engine::tick;", &["engine"]),
        ("policy", "let c = '\"'; use crate::api::x;", &["api"]),
    ];
    for (path, source, want) in table {
        let path: Vec<String> = p(path).into_iter().filter(|s| s != "mod").collect();
        let got: Vec<String> = edges(&path, source).into_iter().map(|(_, m)| m).collect();
        assert_eq!(got, *want, "{path:?}: {source}");
    }
}
