//! The layering of gateway's top-level modules (ARCHITECTURE.md, "Layers"), checked as an
//! absence: no module names one of its own rank or above. A module is named by a `crate::`
//! path (in a `use`, grouped or not, or inline) or by `super::` climbing out of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Lowest first; a module may name only modules of a lower rank. Keep in step with
/// ARCHITECTURE.md ("Layers").
const RANKS: &[&[&str]] = &[
    &["config", "error", "frame", "shrink", "pulse"],
    &["limits", "outbox"],
    &["auth"],
    // Telemetry labels a channel by namespace, past auth's app-scope separator.
    &["stats", "telemetry"],
    &["hub"],
    &["backend"],
    // Webhooks keep their state through the back-end's `WebhookState`.
    &["webhooks"],
    // `wiring`: the back-end and webhooks `connect_bus` plugs in, shared by the subsystems.
    // `moderation` signs its questions as webhooks sign their deliveries.
    &["sessions", "wiring", "moderation"],
    // The subsystems `Gateway` holds; none of them knows the gateway.
    &["publish", "apps", "tokens"],
    // Events publish through `Publisher`; annotations take `publish::Origin`.
    &["events", "node_events", "annotate", "push"],
    &["connection"],
    &["server"],
];

/// The lowest rank that may name lib.rs's own items (`Gateway`, `GatewayState`, …): the
/// back-end's adapter to the node and the modules that serve it, not the subsystems.
const NAMES_LIB_FROM: usize = 9;

const PENDING: &[(&str, &str)] = &[];

#[test]
fn modules_name_only_lower_ranks() {
    let mut broken = Vec::new();
    let mut pending_seen = Vec::new();
    for edge in edges(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        if allowed(&edge.from, &edge.to) {
            continue;
        }
        if PENDING.contains(&(edge.from.as_str(), edge.to.as_str())) {
            pending_seen.push((edge.from, edge.to));
            continue;
        }
        broken.push(format!("{}: {} names {}", edge.at, edge.from, edge.to));
    }
    assert!(
        broken.is_empty(),
        "module layering broken (see ARCHITECTURE.md, Layers):\n{}",
        broken.join("\n")
    );
    for edge in PENDING {
        assert!(
            pending_seen
                .iter()
                .any(|(from, to)| (from.as_str(), to.as_str()) == *edge),
            "PENDING edge {edge:?} is gone: remove it from the list"
        );
    }
}

/// Every edge found, for reading the graph while changing it: `cargo test -p gateway --test it
/// -- --ignored --nocapture print_edges`, with `LAYERING_SRC=<dir>` to read another tree.
#[test]
#[ignore]
fn print_edges() {
    let src = std::env::var_os("LAYERING_SRC").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        PathBuf::from,
    );
    let mut edges_by_pair: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for edge in edges(&src) {
        let ok = if allowed(&edge.from, &edge.to) {
            ""
        } else {
            " BACK-EDGE"
        };
        edges_by_pair
            .entry((edge.from, format!("{}{ok}", edge.to)))
            .or_default()
            .push(edge.at);
    }
    for ((from, to), places) in edges_by_pair {
        println!("{from} -> {to}: {}", places.join(" "));
    }
}

/// One top-level module naming another (or lib.rs's items), at `file:line`.
struct Edge {
    from: String,
    to: String,
    at: String,
}

/// The edges between top-level modules in every file under `src` but lib.rs (the composition
/// root may use anything).
fn edges(src: &Path) -> Vec<Edge> {
    let mut edges = Vec::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        let path = module_path(relative);
        let Some(from) = path.first() else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, first) in named_modules(&code_only(&text), &path) {
            let to = top_level(src, &first);
            if to != *from {
                edges.push(Edge {
                    from: from.clone(),
                    to,
                    at: format!("gateway/src/{}:{line}", relative.display()),
                });
            }
        }
    }
    edges
}

fn rank(module: &str) -> usize {
    RANKS
        .iter()
        .position(|rank| rank.contains(&module))
        .unwrap_or_else(|| panic!("module {module} has no rank: add it to RANKS"))
}

fn allowed(from: &str, to: &str) -> bool {
    if to == LIB {
        return rank(from) >= NAMES_LIB_FROM;
    }
    rank(to) < rank(from)
}

/// What a path to an item of lib.rs itself resolves to.
const LIB: &str = "lib";

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The module path of a file under src/: `hub/mod.rs` is `[hub]`, `hub/log.rs` `[hub, log]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap();
    match file.as_str() {
        "lib.rs" | "mod.rs" => {}
        _ => parts.push(file.trim_end_matches(".rs").to_owned()),
    }
    parts
}

/// The source with comments, strings and char literals blanked (newlines kept for line numbers).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < chars.len() {
        let rest = &chars[i..];
        if rest.starts_with(&['/', '/']) {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i..].starts_with(&['/', '*']) {
                    depth += 1;
                    i += 2;
                } else if chars[i..].starts_with(&['*', '/']) {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if rest[0] == 'r' && raw_string_hashes(rest).is_some() {
            let hashes = raw_string_hashes(rest).unwrap();
            i += 2 + hashes;
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while i < chars.len() && !chars[i..].starts_with(&close) {
                blank(&mut out, chars[i]);
                i += 1;
            }
            i += close.len();
        } else if rest[0] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    blank(&mut out, c);
                }
                i += 1;
            }
            i += 1;
        } else if rest[0] == '\'' && rest.get(1) == Some(&'\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if rest[0] == '\'' && rest.get(2) == Some(&'\'') {
            i += 3;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    out
}

/// `r"…"` or `r#"…"#` at the start of `rest` (and not an identifier ending in r): its hashes.
fn raw_string_hashes(rest: &[char]) -> Option<usize> {
    let hashes = rest[1..].iter().take_while(|&&c| c == '#').count();
    (rest.get(1 + hashes) == Some(&'"')).then_some(hashes)
}

/// The first segment of every path out of the module that `code` names (after `crate::`, or
/// `super::` climbing to the root), with its line.
fn named_modules(code: &str, path: &[String]) -> Vec<(usize, String)> {
    let inline_modules = inline_modules(code);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut named = Vec::new();
    let mut at = 0;
    while at < code.len() {
        let rest = &code[at..];
        let starts_word = code[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !is_ident(c) && c != '$');
        let target = if !starts_word {
            None
        } else if let Some(after) = rest.strip_prefix("crate::") {
            Some((1, after))
        } else if rest.starts_with("super::") {
            let mut after = rest;
            let mut climbed = 0;
            while let Some(next) = after.strip_prefix("super::") {
                climbed += 1;
                after = next;
            }
            // `super` in a file goes to its module's parent, in an inline `mod` to the file's
            // module: climbing past the root leaves the top-level module.
            let depth = path.len() + inline_modules.iter().filter(|r| r.contains(&at)).count();
            (climbed >= depth).then_some((climbed, after))
        } else {
            None
        };
        match target {
            Some((_, after)) => {
                for first in first_segments(after) {
                    named.push((line_of(at), first));
                }
                at = code.len() - after.len();
            }
            None => at += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    named
}

/// The byte ranges of inline `mod name { … }` blocks.
fn inline_modules(code: &str) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut search = 0;
    while let Some(found) = code[search..].find("mod ") {
        let at = search + found;
        search = at + 4;
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let after_name = code[search..].trim_start_matches(|c: char| is_ident(c) || c == ' ');
        if !after_name.starts_with('{') {
            continue;
        }
        let open = code.len() - after_name.len();
        let mut depth = 0;
        for (offset, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        ranges.push(at..open + offset);
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    ranges
}

/// The first segment of the path that starts `rest`, or of each path in a `{…}` group.
fn first_segments(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut segments = Vec::new();
        let mut start = true;
        for (offset, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if start && !c.is_whitespace() => {
                    start = false;
                    segments.push(ident_at(&group[offset..]));
                }
                _ => {}
            }
        }
        segments
    } else {
        vec![ident_at(rest)]
    }
}

fn ident_at(text: &str) -> String {
    text.chars().take_while(|&c| is_ident(c)).collect()
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A first segment after `crate::`: a module is itself; anything else (`Gateway`, `self`) is
/// an item of lib.rs.
fn top_level(src: &Path, segment: &str) -> String {
    let is_module =
        src.join(format!("{segment}.rs")).is_file() || src.join(segment).join("mod.rs").is_file();
    if is_module {
        segment.to_owned()
    } else {
        LIB.to_owned()
    }
}
