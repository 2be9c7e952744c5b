//! The documentation against the code: every relative link and anchor in the Markdown pages
//! leads somewhere, every TOML example is a configuration Holdfast reads, and the configuration
//! reference (docs/configuration.md) has a row for every field and no row for a field that does
//! not exist. `scripts/docs` builds the book from the same pages.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The pages checked: everything under docs/, and the Markdown files at the top.
fn pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let root = root();
    let mut out = Vec::new();
    walk(&root.join("docs"), &mut out);
    for top in ["README.md", "BENCHMARKS.md", "CHANGELOG.md", "SECURITY.md"] {
        out.push(root.join(top));
    }
    out.sort();
    out
}

/// The page's text outside fenced code blocks, and its fenced blocks with their info strings.
fn split(text: &str) -> (String, Vec<(String, String)>) {
    let mut prose = String::new();
    let mut blocks = Vec::new();
    let mut fence: Option<(String, String)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match &mut fence {
            None if trimmed.starts_with("```") => {
                fence = Some((
                    trimmed.trim_start_matches('`').trim().to_string(),
                    String::new(),
                ));
            }
            None => {
                prose.push_str(line);
                prose.push('\n');
            }
            Some(_) if trimmed.starts_with("```") => blocks.push(fence.take().unwrap()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    (prose, blocks)
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings (a repeated heading gets `-1`, `-2`, … as on GitHub).
fn anchors(text: &str) -> BTreeSet<String> {
    let (prose, _) = split(text);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for line in prose.lines() {
        if let Some(h) = line.strip_prefix('#') {
            let s = slug(h.trim_start_matches('#'));
            let n = seen.entry(s.clone()).or_default();
            out.insert(if *n == 0 {
                s.clone()
            } else {
                format!("{s}-{n}")
            });
            *n += 1;
        }
    }
    out
}

/// The targets of the page's inline links, `[text](target)`, outside code.
fn links(prose: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = prose;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            let target = &rest[..end];
            if !target.contains(char::is_whitespace) {
                out.push(target.to_string());
            }
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_leads_somewhere() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let (prose, _) = split(&text);
        for target in links(&prose) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            let name = page
                .strip_prefix(root())
                .unwrap_or(&page)
                .display()
                .to_string();
            if !dest.exists() {
                broken.push(format!("{name}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let dest_text = std::fs::read_to_string(&dest).unwrap_or_default();
                if !anchors(&dest_text).contains(anchor) {
                    broken.push(format!("{name}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} links found: is the parser right?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_toml_example_is_a_configuration_holdfast_reads() {
    let mut bad = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for (info, body) in split(&text).1 {
            if info != "toml" {
                continue;
            }
            checked += 1;
            if let Err(e) = toml::from_str::<holdfast::Config>(&body) {
                bad.push(format!("{}:\n{body}{e}", page.display()));
            }
        }
    }
    assert!(checked >= 5, "only {checked} TOML examples found");
    assert!(bad.is_empty(), "{}", bad.join("\n\n"));
    // The packaged configuration too, and it passes validation apart from the files it names.
    let shipped = std::fs::read_to_string(root().join("contrib/holdfast.toml")).unwrap();
    toml::from_str::<holdfast::Config>(&shipped).expect("contrib/holdfast.toml");
}

/// The `| `key` |` rows of each `## `[section]`` table of docs/configuration.md.
fn documented_fields() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let mut section = None;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h
                .strip_prefix("`[")
                .and_then(|s| s.strip_suffix("]`"))
                .map(str::to_string);
            continue;
        }
        if let (Some(section), Some(row)) = (&section, line.strip_prefix("| `")) {
            if let Some((key, _)) = row.split_once("` |") {
                out.insert((section.clone(), key.to_string()));
            }
        }
    }
    out
}

#[test]
fn the_configuration_reference_matches_the_code() {
    let documented = documented_fields();
    assert!(documented.len() > 50, "{documented:?}");
    // Code to docs: every field the default configuration has (fields unset by default, the
    // `Option`s, do not appear in it; the other direction covers them).
    let defaults = toml::Value::try_from(holdfast::Config::default()).unwrap();
    let mut missing = Vec::new();
    for (section, table) in defaults.as_table().unwrap() {
        for key in table.as_table().unwrap().keys() {
            if !documented.contains(&(section.clone(), key.clone())) {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields with no row in docs/configuration.md: {missing:?}"
    );
    // Docs to code: every row names a field the configuration accepts (a wrong value type is
    // fine here; an unknown field is not).
    let mut unknown = Vec::new();
    for (section, key) in &documented {
        let text = format!("[{section}]\n{key} = 0\n");
        if let Err(e) = toml::from_str::<holdfast::Config>(&text) {
            if e.to_string().contains("unknown field") {
                unknown.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "rows in docs/configuration.md for fields that do not exist: {unknown:?}"
    );
}
