//! The documentation holds together: every relative link in `README.md`, `docs/*.md`,
//! `migrations-docs/README.md` and `BENCHMARKS.md` names a file of the repository and, with an
//! `#anchor`, a heading of that file, as GitHub renders it; and the metrics sample and table of
//! `docs/operations.md` are what `/metrics` serves.
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

/// The shape of one sample of an OpenMetrics exposition: its name and its label names, in the
/// order they are served. Values, label values and timestamps are not part of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    name: String,
    labels: Vec<String>,
}

/// Reads a sample line, `name{a="x",b="y"} value`: its shape, or why it is not one (no
/// number for a value, say). Label values may hold escaped quotes, commas and braces.
fn sample(line: &str) -> Result<Shape, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inner.split_once("=\"").ok_or("a label without =\"")?;
            labels.push(key.to_string());
            let mut escaped = false;
            let close = after
                .char_indices()
                .find(|&(_, c)| {
                    let closes = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    closes
                })
                .map(|(i, _)| i)
                .ok_or("an unterminated label value")?;
            inner = &after[close + 1..];
            inner = inner.strip_prefix(',').unwrap_or(inner);
        }
    }
    let value = rest
        .strip_prefix(' ')
        .and_then(|v| v.split(' ').next())
        .ok_or("no value after the name and labels")?;
    value
        .parse::<f64>()
        .map_err(|_| format!("the value {value:?} is not a number"))?;
    Ok(Shape { name, labels })
}

/// The family and type a `# TYPE family type` line declares.
fn type_line(line: &str) -> Option<(&str, &str)> {
    line.strip_prefix("# TYPE ")?.split_once(' ')
}

/// Whether a sample name is one of a family's, by the family's `# TYPE`: in OpenMetrics a
/// counter's samples add `_total`, an info's `_info`, a histogram's `_bucket`, `_count` and
/// `_sum`; a gauge's are named as the family.
fn belongs_to(sample_name: &str, family: &str, kind: &str) -> bool {
    let suffixes: &[&str] = match kind {
        "counter" => &["_total"],
        "info" => &["_info"],
        "histogram" => &["_bucket", "_count", "_sum"],
        _ => &[""],
    };
    suffixes
        .iter()
        .any(|suffix| sample_name.strip_prefix(family) == Some(*suffix))
}

/// What an exposition serves: its `# HELP`/`# TYPE` lines word for word, each family's type, and
/// the shape of every sample.
struct Exposition {
    comments: BTreeSet<String>,
    types: HashMap<String, String>,
    shapes: BTreeSet<Shape>,
}

impl Exposition {
    /// The pinned exposition of a known cycle, which `metrics::tests::exposition_snapshot`
    /// holds equal to what `/metrics` renders.
    fn served() -> Self {
        let path = root().join("src/snapshots/metrics.txt");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let mut served = Exposition {
            comments: BTreeSet::new(),
            types: HashMap::new(),
            shapes: BTreeSet::new(),
        };
        for line in text.lines().filter(|l| !l.is_empty() && *l != "# EOF") {
            if line.starts_with("# ") {
                if let Some((family, kind)) = type_line(line) {
                    served.types.insert(family.to_string(), kind.to_string());
                }
                served.comments.insert(line.to_string());
            } else {
                let shape = sample(line).unwrap_or_else(|e| panic!("snapshot: {line}: {e}"));
                served.shapes.insert(shape);
            }
        }
        served
    }

    /// The family a sample name belongs to, and the family's type.
    fn family_of(&self, sample_name: &str) -> Option<(&str, &str)> {
        self.types
            .iter()
            .find(|(family, kind)| belongs_to(sample_name, family, kind))
            .map(|(family, kind)| (family.as_str(), kind.as_str()))
    }

    /// The label names (without a histogram's `le`) of the samples a metric name of the docs
    /// stands for: the samples of that name, or of every series of a histogram family.
    fn label_names_of(&self, metric: &str) -> BTreeSet<Vec<String>> {
        self.shapes
            .iter()
            .filter(|s| {
                s.name == metric
                    || (self.types.get(metric).is_some_and(|k| k == "histogram")
                        && belongs_to(&s.name, metric, "histogram"))
            })
            .map(|s| s.labels.iter().filter(|l| *l != "le").cloned().collect())
            .collect()
    }
}

/// The lines of the `### Metrics` section of `docs/operations.md`, numbered from 1 in the file.
fn metrics_section() -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(root().join("docs/operations.md"))
        .expect("docs/operations.md is readable");
    let lines: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.to_string()))
        .skip_while(|(_, l)| l != "### Metrics")
        .collect();
    assert!(!lines.is_empty(), "docs/operations.md has no ### Metrics");
    let mut in_code = false;
    lines
        .into_iter()
        .enumerate()
        .take_while(|(i, (_, l))| {
            if l.starts_with("```") {
                in_code = !in_code;
            }
            let heading = l.starts_with('#') && l.trim_start_matches('#').starts_with(' ');
            *i == 0 || in_code || !heading
        })
        .map(|(_, line)| line)
        .collect()
}

/// "Matches" for the sample exposition in the docs: every `# HELP` and `# TYPE` line is served
/// word for word; every sample follows the `# TYPE` of its family, has the name and the label
/// names (in order) of a served sample, and a numeric value; the sample ends with `# EOF`. It is
/// an excerpt: families and samples may be left out, values and label values are one run's.
#[test]
fn the_metrics_sample_in_the_docs_is_what_metrics_serves() {
    let served = Exposition::served();
    let section = metrics_section();
    let mut blocks: Vec<Vec<(usize, String)>> = Vec::new();
    let mut current: Option<Vec<(usize, String)>> = None;
    for (number, line) in &section {
        match (&mut current, line.starts_with("```")) {
            (None, true) => current = Some(Vec::new()),
            (Some(_), true) => blocks.extend(current.take()),
            (Some(block), false) => block.push((*number, line.clone())),
            (None, false) => {}
        }
    }
    let samples: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.last().is_some_and(|(_, l)| l == "# EOF"))
        .collect();
    assert_eq!(
        samples.len(),
        1,
        "docs/operations.md, ### Metrics: expected one sample exposition ending in # EOF"
    );
    let mut problems = Vec::new();
    let mut family: Option<(String, String)> = None;
    let mut shown = 0;
    for (number, line) in &samples[0] {
        let at = format!("docs/operations.md:{number}: {line}\n    ");
        if line == "# EOF" {
            continue;
        }
        if line.starts_with('#') {
            if !served.comments.contains(line) {
                problems.push(format!(
                    "{at}is not a # HELP or # TYPE line /metrics serves"
                ));
            }
            if let Some((f, kind)) = type_line(line) {
                family = Some((f.to_string(), kind.to_string()));
            }
            continue;
        }
        shown += 1;
        match sample(line) {
            Err(why) => problems.push(format!("{at}is not a sample: {why}")),
            Ok(shape) => {
                match &family {
                    Some((f, kind)) if belongs_to(&shape.name, f, kind) => {}
                    Some((f, kind)) => problems.push(format!(
                        "{at}stands under # TYPE {f} {kind}, a family it does not belong to"
                    )),
                    None => problems.push(format!("{at}stands before any # TYPE line")),
                }
                if !served.shapes.contains(&shape) {
                    problems.push(format!(
                        "{at}/metrics serves no {} with the labels {:?}",
                        shape.name, shape.labels
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the metrics sample in the docs differs from what /metrics serves \
         (src/snapshots/metrics.txt):\n{}",
        problems.join("\n")
    );
    assert!(shown >= 10, "only {shown} samples in the docs' sample");
}

/// The label names a cell of the metrics table names: its backticked words outside
/// parentheses (inside them stand the label's values).
fn table_label_names(cell: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut code: Option<String> = None;
    for c in cell.chars() {
        match (c, &mut code) {
            ('`', None) => code = Some(String::new()),
            ('`', Some(word)) => {
                if depth == 0 {
                    names.push(std::mem::take(word));
                }
                code = None;
            }
            (c, Some(word)) => word.push(c),
            ('(', None) => depth += 1,
            (')', None) => depth -= 1,
            _ => {}
        }
    }
    names
}

/// Every metric of the docs' table is served, with the table's type and label names, and every
/// family served has a row.
#[test]
fn the_metrics_table_in_the_docs_names_every_served_metric_and_nothing_else() {
    let served = Exposition::served();
    let mut problems = Vec::new();
    let mut covered = BTreeSet::new();
    for (number, line) in metrics_section() {
        if !line.starts_with("| `sn_oauth_keeper_") {
            continue;
        }
        let at = format!("docs/operations.md:{number}: ");
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [metric, kind, labels, ..] = cells[..] else {
            problems.push(format!("{at}a row without metric, type and labels"));
            continue;
        };
        let metric = metric.trim_matches('`');
        // A histogram is named by its family (its series add suffixes); every other metric by
        // the name its samples carry, the one PromQL queries.
        let family = match served.types.get_key_value(metric) {
            Some((f, kind)) if kind == "histogram" => Some((f.as_str(), kind.as_str())),
            _ => served.family_of(metric),
        };
        let label_sets = served.label_names_of(metric);
        let Some((family, served_kind)) = family.filter(|_| !label_sets.is_empty()) else {
            problems.push(format!("{at}{metric} is not served"));
            continue;
        };
        covered.insert(family.to_string());
        if kind != served_kind {
            problems.push(format!("{at}{metric} is a {served_kind}, not a {kind}"));
        }
        let documented: BTreeSet<String> = table_label_names(labels).into_iter().collect();
        for served_labels in label_sets {
            let served_labels: BTreeSet<String> = served_labels.into_iter().collect();
            if served_labels != documented {
                problems.push(format!(
                    "{at}{metric} is served with the labels {served_labels:?}, the table says {documented:?}"
                ));
            }
        }
    }
    for family in served.types.keys() {
        if !covered.contains(family) {
            problems.push(format!(
                "docs/operations.md: the metrics table has no row for the family {family}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
