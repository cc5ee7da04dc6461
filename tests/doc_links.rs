//! Every relative link in the README, `docs/*.md`, BENCHMARKS.md and RELIABILITY.md resolves: the
//! file exists and, for `#anchor`, the Markdown file has a heading (or an `<a id>`) that GitHub
//! would give that anchor. No servers; the documents move around, their links must not break.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The documents whose links are checked.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = ["README.md", "BENCHMARKS.md", "RELIABILITY.md"]
        .iter()
        .map(|name| root().join(name))
        .collect();
    let mut in_docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ lists")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    in_docs.sort();
    docs.extend(in_docs);
    docs
}

/// The lines outside fenced code blocks, with their line numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(open), Some(m)) if open == m => fence = None,
            (None, None) => lines.push((i + 1, line)),
            _ => {}
        }
    }
    lines
}

/// `text` without its inline code spans' backticks but with their content (GitHub keeps it in
/// an anchor), or with code spans removed entirely (`keep_code = false`, for finding links).
fn strip_code(text: &str, keep_code: bool) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 0 || keep_code {
            out.push_str(part);
        }
    }
    out
}

/// GitHub's anchor for a heading: link targets dropped (their text kept), lower case, every
/// character but letters, digits, `-`, `_` and spaces removed, spaces turned into `-`.
fn slug(heading: &str) -> String {
    let text = strip_code(heading, true);
    let mut plain = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("](") {
        let Some(end) = rest[start..].find(')') else {
            break;
        };
        plain.push_str(&rest[..start]);
        rest = &rest[start + end + 1..];
    }
    plain.push_str(rest);
    plain
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a Markdown file offers: its headings' slugs (repeats numbered `-1`, `-2`, as
/// GitHub does) and explicit `<a id="..">` / `<a name="..">`.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = HashSet::new();
    for (_, line) in prose_lines(text) {
        for key in ["<a id=\"", "<a name=\""] {
            if let Some(start) = line.find(key) {
                let rest = &line[start + key.len()..];
                if let Some(end) = rest.find('"') {
                    anchors.insert(rest[..end].to_string());
                }
            }
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim().trim_end_matches('#'));
        let count = seen.entry(base.clone()).or_insert(0);
        anchors.insert(match *count {
            0 => base.clone(),
            n => format!("{base}-{n}"),
        });
        *count += 1;
    }
    anchors
}

/// The relative link targets of one line: `[text](target)` and `[label]: target`.
fn link_targets(line: &str) -> Vec<String> {
    let line = strip_code(line, false);
    let mut targets = Vec::new();
    let trimmed = line.trim_start();
    if trimmed.starts_with('[')
        && let Some(pos) = trimmed.find("]: ")
    {
        targets.push(
            trimmed[pos + 3..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string(),
        );
    }
    let mut rest = line.as_str();
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let target = after[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.trim_matches(['<', '>']).to_string());
        rest = &after[end..];
    }
    targets
        .into_iter()
        .filter(|t| !t.is_empty() && !t.contains("://") && !t.starts_with("mailto:"))
        .collect()
}

/// What is wrong with `target` written in `doc`, if anything.
fn broken(
    doc: &Path,
    target: &str,
    cache: &mut HashMap<PathBuf, HashSet<String>>,
) -> Option<String> {
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        doc.to_path_buf()
    } else {
        doc.parent().expect("a document's folder").join(path)
    };
    if !file.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    let anchor = anchor?;
    if file.extension().is_none_or(|ext| ext != "md") {
        return Some(format!("#{anchor} into a file that is not Markdown"));
    }
    let offered = cache.entry(file.clone()).or_insert_with(|| {
        anchors(&std::fs::read_to_string(&file).expect("a linked document reads"))
    });
    (!offered.contains(anchor)).then(|| format!("{} has no heading #{anchor}", file.display()))
}

#[test]
fn every_relative_link_in_the_documents_resolves() {
    let mut cache = HashMap::new();
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("document reads");
        for (number, line) in prose_lines(&text) {
            for target in link_targets(line) {
                checked += 1;
                if let Some(problem) = broken(&doc, &target, &mut cache) {
                    let name = doc.strip_prefix(root()).unwrap_or(&doc).display();
                    problems.push(format!("{name}:{number}: ({target}): {problem}"));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser broken?"
    );
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn anchors_follow_github_rules() {
    let text = "# Switchyard\n## 15. Changes in data path v2: what a client must change\n\
                ### Live replay (`sim --live`)\n```sh\n# not a heading\n```\n## Tests\n## Tests\n\
                ## See [the protocol](protocol.md) §9.1\n";
    let found = anchors(text);
    for expected in [
        "switchyard",
        "15-changes-in-data-path-v2-what-a-client-must-change",
        "live-replay-sim---live",
        "tests",
        "tests-1",
        "see-the-protocol-91",
    ] {
        assert!(found.contains(expected), "{expected} not in {found:?}");
    }
    assert!(!found.contains("not-a-heading"));
    assert_eq!(
        link_targets("see [a](docs/a.md#b), `[x](y)` and [c](https://e.org) [d](#e \"t\")"),
        ["docs/a.md#b", "#e"]
    );
}
