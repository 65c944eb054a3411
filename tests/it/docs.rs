//! The documentation holds together: every relative link in `README.md`, `docs/*.md`,
//! `migrations-docs/README.md` and `BENCHMARKS.md` names a file of the repository and, with an
//! `#anchor`, a heading of that file, as GitHub renders it.
//!
//! The scanner is small on purpose and reads the Markdown these pages use: inline links and
//! images `[text](dest "title")` (`dest` may be `<…>`), reference definitions `[label]: dest`,
//! ATX headings (`#` to `######`), fenced code blocks (``` or ~~~, which hold no links) and code
//! spans (which hold none either, even across a line break). Setext headings and raw HTML anchors
//! are not read: a link to one fails loudly rather than passing unchecked. External links
//! (`http:`, `https:`, `mailto:` and any other scheme) are not fetched.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

/// The workspace root, where the keeper's package lives.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The pages whose links are checked, relative to the root: the fixed ones and every
/// `docs/*.md`.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = ["README.md", "migrations-docs/README.md", "BENCHMARKS.md"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ is readable")
        .map(|entry| entry.expect("an entry of docs/").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| {
            path.strip_prefix(root())
                .expect("under the root")
                .to_path_buf()
        })
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// GitHub's anchor for a heading's text (github-slugger): lowercase; letters, digits, `-` and
/// `_` kept; each space becomes `-`; every other character (punctuation, symbols) dropped.
/// Markup is removed first ([`heading_text`]), so "`/healthz`" counts as "/healthz".
fn slug(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a page's headings, in order: a repeated slug gets `-1`, `-2`, … as on GitHub.
fn anchors<'a>(headings: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut taken = BTreeSet::new();
    let mut repeats: HashMap<String, usize> = HashMap::new();
    for heading in headings {
        let base = slug(heading);
        let mut anchor = base.clone();
        while taken.contains(&anchor) {
            let n = repeats.entry(base.clone()).or_insert(0);
            *n += 1;
            anchor = format!("{base}-{n}");
        }
        taken.insert(anchor);
    }
    taken
}

/// A fence's opening or closing line: its character (`` ` `` or `~`) and length, when the
/// line is one.
fn fence(line: &str) -> Option<(char, usize)> {
    let trimmed = line.trim_start();
    let c = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = trimmed.chars().take_while(|x| *x == c).count();
    (len >= 3).then_some((c, len))
}

/// The page with every fenced code block's lines emptied (line breaks kept, so line numbers
/// stay right).
fn without_fenced_code(text: &str) -> String {
    let mut open: Option<(char, usize)> = None;
    let mut out = String::with_capacity(text.len());
    for line in text.split('\n') {
        match (open, fence(line)) {
            (None, Some(opening)) => open = Some(opening),
            (Some((c, len)), Some((c2, len2)))
                if c == c2 && len2 >= len && line.trim().chars().all(|x| x == c) =>
            {
                open = None
            }
            (None, None) => out.push_str(line),
            (Some(_), _) => {}
        }
        out.push('\n');
    }
    out.pop();
    out
}

/// `text` with every code span blanked out (line breaks kept). A span opens with a run of N
/// backticks and closes at the next run of exactly N within the same paragraph; a run that
/// never closes is literal text.
fn without_code_spans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = chars.clone();
    let run_at = |i: usize| chars[i..].iter().take_while(|c| **c == '`').count();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let n = run_at(i);
        let mut j = i + n;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '\n'
                && chars[j + 1..]
                    .iter()
                    .take_while(|c| **c != '\n')
                    .all(|c| c.is_whitespace())
            {
                break; // a blank line ends the paragraph, and with it any span
            }
            if chars[j] == '`' {
                let m = run_at(j);
                if m == n {
                    close = Some(j + m);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                for c in &mut out[i..end] {
                    if *c != '\n' {
                        *c = ' ';
                    }
                }
                i = end;
            }
            None => i += n,
        }
    }
    out.into_iter().collect()
}

/// A heading's text as rendered: inline code keeps its content without the backticks, a link
/// or image keeps its text.
fn heading_text(raw: &str) -> String {
    let mut text = raw.replace('`', "");
    while let Some(open) = text.find("](") {
        let Some(start) = text[..open].rfind('[') else {
            break;
        };
        let Some(close) = text[open..].find(')') else {
            break;
        };
        let label = text[start + 1..open].to_string();
        let start = if text[..start].ends_with('!') {
            start - 1
        } else {
            start
        };
        text.replace_range(start..open + close + 1, &label);
    }
    text
}

/// The text of every ATX heading of a page, outside fenced code.
fn headings(text: &str) -> Vec<String> {
    without_fenced_code(text)
        .lines()
        .filter_map(|line| {
            let indent = line.len() - line.trim_start_matches(' ').len();
            let rest = line.trim_start_matches(' ');
            let level = rest.chars().take_while(|c| *c == '#').count();
            let body = &rest[level..];
            if indent > 3
                || !(1..=6).contains(&level)
                || !(body.is_empty() || body.starts_with([' ', '\t']))
            {
                return None;
            }
            // An optional closing run of `#`, when a space precedes it.
            let body = body.trim();
            let unclosed = body.trim_end_matches('#');
            let body = if unclosed.is_empty() || unclosed.ends_with([' ', '\t']) {
                unclosed.trim_end()
            } else {
                body
            };
            Some(heading_text(body))
        })
        .collect()
}

/// One link of a page: the line it stands on (from 1) and its destination as written.
#[derive(Debug, PartialEq)]
struct Link {
    line: usize,
    target: String,
}

/// The destination that starts `rest` (just after `](`): `<…>`, or up to white space or the
/// `)` that balances the parentheses.
fn destination(rest: &str) -> String {
    let rest = rest.trim_start_matches([' ', '\t']);
    if let Some(inner) = rest.strip_prefix('<') {
        return inner.split('>').next().unwrap_or_default().to_string();
    }
    let mut depth = 0usize;
    rest.chars()
        .take_while(|c| match c {
            '(' => {
                depth += 1;
                true
            }
            ')' if depth == 0 => false,
            ')' => {
                depth -= 1;
                true
            }
            c => !c.is_whitespace(),
        })
        .collect()
}

/// Every link of a page outside code: inline links and images, and reference definitions.
fn links(text: &str) -> Vec<Link> {
    let prose = without_code_spans(&without_fenced_code(text));
    let mut found = Vec::new();
    for (index, line) in prose.lines().enumerate() {
        let line_number = index + 1;
        for (at, _) in line.match_indices("](") {
            found.push(Link {
                line: line_number,
                target: destination(&line[at + 2..]),
            });
        }
        // A reference definition: `[label]: destination` at the start of a line (a footnote,
        // `[^label]:`, is not a link).
        let trimmed = line.trim_start_matches(' ');
        let definition = trimmed
            .strip_prefix('[')
            .filter(|_| line.len() - trimmed.len() <= 3 && !trimmed.starts_with("[^"))
            .and_then(|rest| rest.split_once(']'))
            .and_then(|(_, after)| after.strip_prefix(':'));
        if let Some(rest) = definition {
            found.push(Link {
                line: line_number,
                target: destination(rest),
            });
        }
    }
    found
}

/// The file a link leads to, relative to the root, or why it leads nowhere: a path relative to
/// the page's folder (or to the root when it starts with `/`, as on GitHub) that must stay
/// inside the repository.
fn resolve(page: &Path, path: &str) -> Result<PathBuf, String> {
    let (base, path) = match path.strip_prefix('/') {
        Some(from_root) => (PathBuf::new(), from_root),
        None => (page.parent().unwrap_or(Path::new("")).to_path_buf(), path),
    };
    let mut resolved = PathBuf::new();
    for component in base.join(path).components() {
        match component {
            Component::Normal(part) => resolved.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !resolved.pop() {
                    return Err("leads out of the repository".into());
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("is not a path inside the repository".into());
            }
        }
    }
    Ok(resolved)
}

/// Whether a destination leaves the repository (`https:`, `mailto:`, any `scheme:`).
fn is_external(target: &str) -> bool {
    target.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// What is wrong with one link of `page`, if anything.
fn check_link(
    page: &Path,
    target: &str,
    anchors_of: &mut impl FnMut(&Path) -> Option<BTreeSet<String>>,
) -> Option<String> {
    if target.is_empty() {
        return Some("has no destination".into());
    }
    if is_external(target) {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        page.to_path_buf()
    } else {
        match resolve(page, path) {
            Ok(file) => file,
            Err(why) => return Some(why),
        }
    };
    if !root().join(&file).exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    let anchor = anchor?;
    match anchors_of(&file) {
        None => Some(format!(
            "#{anchor}: {} is not a Markdown file, so it has no headings to link to",
            file.display()
        )),
        Some(known) if known.contains(anchor) => None,
        Some(_) => Some(format!(
            "#{anchor}: no heading of {} has this anchor",
            file.display()
        )),
    }
}

#[test]
fn every_relative_link_of_the_docs_leads_to_a_file_and_a_heading() {
    let mut cache: HashMap<PathBuf, Option<BTreeSet<String>>> = HashMap::new();
    let mut anchors_of = |file: &Path| {
        cache
            .entry(file.to_path_buf())
            .or_insert_with(|| {
                let is_markdown = file.extension().is_some_and(|ext| ext == "md");
                is_markdown.then(|| {
                    let text = std::fs::read_to_string(root().join(file))
                        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                    anchors(headings(&text).iter().map(String::as_str))
                })
            })
            .clone()
    };
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(root().join(&page))
            .unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        for link in links(&text) {
            checked += 1;
            if let Some(problem) = check_link(&page, &link.target, &mut anchors_of) {
                problems.push(format!(
                    "{}:{}: ({}) {problem}",
                    page.display(),
                    link.line,
                    link.target
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} broken link(s) in the docs:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The pages hold about eighty links; far fewer means the scanner stopped seeing them.
    assert!(
        checked > 60,
        "only {checked} links found: is the scanner blind?"
    );
}

#[test]
fn the_slug_rule_is_githubs() {
    for (heading, anchor) in [
        ("Quick start", "quick-start"),
        (
            "Health: `/healthz` and `/readyz`",
            "health-healthz-and-readyz",
        ),
        ("Paths and `${VAR}`", "paths-and-var"),
        (
            "Writing `expires` right, whatever the user's time zone",
            "writing-expires-right-whatever-the-users-time-zone",
        ),
        (
            "Changing the config of a running keeper (SIGHUP)",
            "changing-the-config-of-a-running-keeper-sighup",
        ),
        ("Deploy > systemd", "deploy--systemd"),
        ("snake_case and kebab-case", "snake_case-and-kebab-case"),
        ("Straße über Ölfelder", "straße-über-ölfelder"),
        ("[Linked](../x.md) heading", "linked-heading"),
    ] {
        let text = heading_text(heading);
        assert_eq!(slug(&text), anchor, "{heading:?}");
    }
    assert_eq!(
        anchors(["Logs", "Logs", "Logs-1", "Other"]),
        ["logs", "logs-1", "logs-1-1", "other"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

#[test]
fn the_scanner_sees_links_and_headings_outside_code_only() {
    let page = "# Title #\n\
                See [a](a.md#x) and ![img](<i m g.svg> \"title\") and [p](w(1).md).\n\
                `[not](code.md)` and ``[nor](this.md)`` and `spanning\n\
                [lines](span.md)` but [yes](https://example.com).\n\
                \n\
                ```sh\n\
                [fenced](no.md)\n\
                # not a heading\n\
                ```\n\
                ## Second `code` ##\n\
                [ref]: ref.md#second-code\n\
                #hashtag\n\
                A lone ` backtick and [after](after.md).\n";
    assert_eq!(
        links(page)
            .into_iter()
            .map(|l| (l.line, l.target))
            .collect::<Vec<_>>(),
        [
            (2, "a.md#x"),
            (2, "i m g.svg"),
            (2, "w(1).md"),
            (4, "https://example.com"),
            (11, "ref.md#second-code"),
            (13, "after.md"),
        ]
        .map(|(line, target)| (line, target.to_string()))
    );
    assert_eq!(headings(page), ["Title", "Second code"]);
}

#[test]
fn a_link_is_resolved_from_its_page_and_must_stay_inside() {
    let page = Path::new("docs/operations.md");
    assert_eq!(resolve(page, "../deploy/x").unwrap(), Path::new("deploy/x"));
    assert_eq!(
        resolve(page, "design.md").unwrap(),
        Path::new("docs/design.md")
    );
    assert_eq!(
        resolve(page, "/src/lib.rs").unwrap(),
        Path::new("src/lib.rs")
    );
    assert!(resolve(page, "../../elsewhere.md").is_err());
    assert!(is_external("https://example.com") && is_external("mailto:a@b"));
    assert!(!is_external("design.md#how-it-works") && !is_external("#x"));
}
