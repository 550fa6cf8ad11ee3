//! The module graph of the agent and of the probes, read from their sources: no two modules use
//! each other (directly or through others), and no stage of the data path uses a later one.
//!
//! A module is a top-level module of `tracer/src` (`assemble`, with its submodules), and a file of
//! `tracer-ebpf/src` (`probes::gotls`), so that a probe file that another module uses shows as a
//! loop. Uses are the `crate::` paths of the sources, `use` lines and inline paths alike.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{Context, Result, bail};

/// The stages of the agent's data path, in order.
const STAGES: &[&str] =
    &["probes", "events", "capture", "connections", "protocols", "meaning", "assemble", "correlate", "export"];

type Graph = BTreeMap<String, BTreeSet<String>>;

pub fn check(root: &Path) -> Result<()> {
    let agent = graph(&root.join("tracer/src"), 1)?;
    // The agent's folders (protocols/http2/…) once more, one node per file or folder below them.
    let agent_files = graph(&root.join("tracer/src"), usize::MAX)?;
    let probes = graph(&root.join("tracer-ebpf/src"), usize::MAX)?;
    let mut problems = Vec::new();
    for (name, g) in [("tracer", &agent), ("tracer", &agent_files), ("tracer-ebpf", &probes)] {
        problems.extend(loops(g).into_iter().map(|l| format!("{name}: an import loop: {}", l.join(" -> "))));
    }
    problems.extend(
        later_stages(&agent).into_iter().map(|path| format!("tracer: a stage uses a later one: {}", path.join(" -> "))),
    );
    if !problems.is_empty() {
        bail!("the module graph is not a straight line:\n  {}", problems.join("\n  "));
    }
    eprintln!("xtask: module graph: no import loops ({} agent modules, {} probe modules)", agent.len(), probes.len());
    Ok(())
}

/// Module → the modules it uses. `depth`: how many path components name a module at most.
fn graph(src: &Path, depth: usize) -> Result<Graph> {
    let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src).expect("below src");
        let Some(module) = module_of(rel, depth) else { continue };
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        paths.entry(module).or_default().extend(crate_paths(&strip_comments(&text)));
    }
    // A path names the longest module it starts with: `probes::gotls::forget` is `probes::gotls`.
    let names: BTreeSet<String> = paths.keys().cloned().collect();
    let resolve = |path: &str| {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|p| names.contains(p))
    };
    let mut g = Graph::new();
    for (module, used) in &paths {
        let uses = g.entry(module.clone()).or_default();
        for u in used.iter().filter_map(|p| resolve(p)) {
            // A module's own submodules and its parent are part of it.
            if u != *module && !module.starts_with(&format!("{u}::")) && !u.starts_with(&format!("{module}::")) {
                uses.insert(u);
            }
        }
    }
    Ok(g)
}

fn rust_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// `assemble/http1.rs` → `assemble` at depth 1; `probes/gotls.rs` → `probes::gotls`; the crate
/// roots (`lib.rs`, `main.rs`) are no module. Test files belong to the module they test.
fn module_of(rel: &Path, depth: usize) -> Option<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    if parts.is_empty() || (parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main")) {
        return None;
    }
    parts.truncate(depth);
    Some(parts.join("::"))
}

fn strip_comments(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Every path that starts with `crate::`, braces expanded: `crate::{a::B, c}` gives `a::B`, `c`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `tracer_common::crate`-like names, `$crate::`
        }
        out.extend(expand(rest));
    }
    out
}

/// The paths a `use` tree at the start of `s` names (only as deep as a module name needs).
fn expand(s: &str) -> Vec<String> {
    let s = s.trim_start();
    if let Some(group) = s.strip_prefix('{') {
        return split_group(group).into_iter().flat_map(expand).collect();
    }
    let head: String = s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    if head.is_empty() {
        return Vec::new();
    }
    let after = &s[head.len()..];
    match after.strip_prefix("::") {
        Some(tail) => {
            let inner = expand(tail);
            if inner.is_empty() { vec![head] } else { inner.into_iter().map(|p| format!("{head}::{p}")).collect() }
        }
        None => vec![head],
    }
}

/// The items of a brace group whose opening brace was just read, split at its top-level commas.
fn split_group(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0usize, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&s[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

/// The cycles of `g`, one per strongly connected component of more than one module.
fn loops(g: &Graph) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    for start in g.keys() {
        if seen.contains(start) {
            continue;
        }
        // A path back to `start` through modules not already reported.
        if let Some(path) = path_back(g, start, start, &mut BTreeSet::new()) {
            seen.extend(path.iter().cloned());
            let mut cycle = vec![start.clone()];
            cycle.extend(path);
            found.push(cycle);
        }
    }
    found
}

fn path_back(g: &Graph, from: &str, to: &str, visited: &mut BTreeSet<String>) -> Option<Vec<String>> {
    for next in g.get(from).into_iter().flatten() {
        if next == to {
            return Some(vec![to.to_owned()]);
        }
        if visited.insert(next.clone())
            && let Some(mut rest) = path_back(g, next, to, visited)
        {
            rest.insert(0, next.clone());
            return Some(rest);
        }
    }
    None
}

/// Paths from a stage to a later one, directly or through modules that are no stage (`cli`).
fn later_stages(g: &Graph) -> Vec<Vec<String>> {
    let rank = |m: &str| STAGES.iter().position(|s| *s == m);
    let mut out = Vec::new();
    for module in g.keys() {
        let Some(r) = rank(module) else { continue };
        // Breadth first, remembering how each module was reached.
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([module.as_str()]);
        while let Some(m) = queue.pop_front() {
            for next in g.get(m).into_iter().flatten() {
                if next == module || came_from.contains_key(next.as_str()) {
                    continue;
                }
                came_from.insert(next, m);
                match rank(next) {
                    Some(rn) if rn > r => {
                        let mut path = vec![next.clone()];
                        let mut at = next.as_str();
                        while at != module {
                            at = came_from[at];
                            path.insert(0, at.to_owned());
                        }
                        out.push(path);
                    }
                    Some(_) => {}
                    None => queue.push_back(next),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_trees_are_expanded() {
        let text = concat!(
            "use crate::{\n    assemble::{Assembler, Conn},\n    events::{self, Event},\n    span,\n};\n",
            "let x = crate::clock::Clock::new(); // crate::ignored::in_comment\n",
        );
        let paths = crate_paths(&strip_comments(text));
        assert_eq!(
            paths,
            ["assemble::Assembler", "assemble::Conn", "events::self", "events::Event", "span", "clock::Clock::new"]
        );
    }

    #[test]
    fn modules_of_files() {
        assert_eq!(module_of(Path::new("assemble/http1.rs"), 1).as_deref(), Some("assemble"));
        assert_eq!(module_of(Path::new("run.rs"), 1).as_deref(), Some("run"));
        assert_eq!(module_of(Path::new("lib.rs"), 1), None);
        assert_eq!(module_of(Path::new("probes/gotls.rs"), usize::MAX).as_deref(), Some("probes::gotls"));
        assert_eq!(module_of(Path::new("probes/mod.rs"), usize::MAX).as_deref(), Some("probes"));
    }

    fn g(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    }

    #[test]
    fn a_loop_through_a_third_module_is_found_and_a_chain_is_not_one() {
        assert!(loops(&g(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
        let found = loops(&g(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]));
        assert_eq!(found, [vec!["a", "b", "c", "a"]]);
    }

    #[test]
    fn a_stage_that_uses_a_later_one_is_reported_even_through_another_module() {
        let graph = g(&[("connections", "assemble"), ("assemble", "protocols"), ("run", "export")]);
        assert_eq!(later_stages(&graph), [vec!["connections", "assemble"]]);
        let graph = g(&[("probes", "cli"), ("cli", "export"), ("assemble", "span"), ("export", "span")]);
        assert_eq!(later_stages(&graph), [vec!["probes", "cli", "export"]]);
    }
}
