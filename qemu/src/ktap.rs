//! A parser for KTAP version 1 (`Documentation/dev-tools/ktap.rst` in the kernel tree), the
//! format every guest program and kernel self-test reports in.
//!
//! The input is a guest's serial console, so a document may have kernel messages or stderr
//! interleaved with it; lines that are not KTAP are kept aside, never an error. Nested subtests
//! are indented (four spaces per level in KUnit's output) and come before their parent's result
//! line.

/// One parsed KTAP document (a program's output, or a subtest block).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    /// Whether a `KTAP version 1` (or `TAP version N`) line was seen.
    pub has_version: bool,
    /// The plan line `1..N`, if any.
    pub plan: Option<Plan>,
    /// Results in order.
    pub results: Vec<TestResult>,
    /// `#` lines before the first result.
    pub diagnostics: Vec<String>,
    /// Structural problems: numbering out of order, a second plan, subtests with no parent.
    pub problems: Vec<String>,
    /// Lines that are not KTAP (kernel messages, stderr).
    pub other: Vec<String>,
}

/// The plan line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// How many results the document announces.
    pub count: usize,
    /// `1..0 # SKIP reason`: the whole document was skipped.
    pub skip_reason: Option<String>,
}

/// One `ok` / `not ok` line and what belongs to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// The test number as printed.
    pub number: usize,
    /// The description (without the directive).
    pub description: String,
    /// The outcome, directives applied.
    pub status: Status,
    /// `#` lines that follow the result line, without the `# ` prefix.
    pub diagnostics: Vec<String>,
    /// The indented subtest block that preceded this line, if any.
    pub subtests: Option<Document>,
}

/// The outcome of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `ok` without a directive.
    Pass,
    /// `not ok` without a directive, or with `# TIMEOUT` / `# ERROR`.
    Fail,
    /// `# SKIP` (on `ok` or `not ok`), `# TODO` and `# XFAIL`: the test did not pass.
    Skip {
        /// The directive and its text, e.g. `SKIP no device`.
        reason: String,
    },
}

/// Parses the lines of one KTAP document.
pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Document {
    let lines: Vec<&str> = lines
        .into_iter()
        .map(|line| line.trim_end_matches(['\r', '\n']))
        .collect();
    let Some(base) = base_indent(&lines) else {
        return Document {
            other: lines
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| (*l).to_owned())
                .collect(),
            ..Document::default()
        };
    };

    let mut doc = Document::default();
    let mut pending_subtests: Vec<&str> = Vec::new();
    for &line in &lines {
        let indent = indent_of(line);
        let content = line.trim();
        if content.is_empty() {
            continue;
        }
        if indent > base {
            pending_subtests.push(line);
            continue;
        }
        if indent < base {
            doc.other.push(line.to_owned());
            continue;
        }
        if is_version(content) {
            if doc.has_version || !doc.results.is_empty() {
                doc.problems.push(format!(
                    "unexpected version line {content:?} inside the document"
                ));
            }
            doc.has_version = true;
        } else if let Some(plan) = parse_plan(content) {
            if doc.plan.is_some() {
                doc.problems.push(format!("a second plan line {content:?}"));
            } else {
                doc.plan = Some(plan);
            }
        } else if let Some(mut result) = parse_result(content) {
            let expected = doc.results.len() + 1;
            if result.number != expected {
                doc.problems.push(format!(
                    "result numbered {} where {expected} was expected",
                    result.number
                ));
            }
            if let Some(subtests) = take_subtests(&mut pending_subtests, &mut doc.other) {
                result.subtests = Some(subtests);
            }
            doc.results.push(result);
        } else if let Some(text) = diagnostic_text(content) {
            match doc.results.last_mut() {
                Some(last) => last.diagnostics.push(text.to_owned()),
                None => doc.diagnostics.push(text.to_owned()),
            }
        } else {
            doc.other.push(line.to_owned());
        }
    }
    if let Some(orphan) = take_subtests(&mut pending_subtests, &mut doc.other) {
        doc.problems.push(format!(
            "output ended inside a subtest block ({} results, no parent result line)",
            orphan.results.len()
        ));
    }
    doc
}

/// Parses the indented lines collected since the last result as a subtest block. Indented
/// lines with no KTAP in them (a panic's backtrace, say) are not subtests: they go to `other`.
fn take_subtests(pending: &mut Vec<&str>, other: &mut Vec<String>) -> Option<Document> {
    if pending.is_empty() {
        return None;
    }
    let block = parse(pending.iter().copied());
    if block.has_version || block.plan.is_some() || !block.results.is_empty() {
        pending.clear();
        Some(block)
    } else {
        other.extend(pending.drain(..).map(str::to_owned));
        None
    }
}

/// The indentation of the document's own lines: that of its version line, else the smallest
/// indentation of any plan or result line.
fn base_indent(lines: &[&str]) -> Option<usize> {
    lines
        .iter()
        .find(|l| is_version(l.trim()))
        .map(|l| indent_of(l))
        .or_else(|| {
            lines
                .iter()
                .filter(|l| {
                    let content = l.trim();
                    parse_plan(content).is_some() || parse_result(content).is_some()
                })
                .map(|l| indent_of(l))
                .min()
        })
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_version(content: &str) -> bool {
    content
        .strip_prefix("KTAP version ")
        .or_else(|| content.strip_prefix("TAP version "))
        .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
}

fn parse_plan(content: &str) -> Option<Plan> {
    let rest = content.strip_prefix("1..")?;
    let (count, directive) = match rest.split_once('#') {
        Some((count, directive)) => (count.trim(), Some(directive.trim())),
        None => (rest.trim(), None),
    };
    let count = count.parse().ok()?;
    let skip_reason = directive.and_then(|d| {
        let upper = d.to_ascii_uppercase();
        upper.starts_with("SKIP").then(|| d.to_owned())
    });
    Some(Plan { count, skip_reason })
}

fn parse_result(content: &str) -> Option<TestResult> {
    let (passed, rest) = if let Some(rest) = content.strip_prefix("not ok ") {
        (false, rest)
    } else if let Some(rest) = content.strip_prefix("ok ") {
        (true, rest)
    } else {
        return None;
    };
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let number = rest.get(..digits)?.parse().ok()?;
    let rest = rest.get(digits..)?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let rest = rest.trim_start();
    let rest = rest.strip_prefix("- ").unwrap_or(rest);
    let (description, directive) = split_directive(rest);
    let status = match directive {
        Some((keyword, text)) if keyword == "SKIP" || keyword == "TODO" || keyword == "XFAIL" => {
            Status::Skip {
                reason: if text.is_empty() {
                    keyword
                } else {
                    format!("{keyword} {text}")
                },
            }
        }
        Some(_) => Status::Fail,
        None if passed => Status::Pass,
        None => Status::Fail,
    };
    Some(TestResult {
        number,
        description: description.to_owned(),
        status,
        diagnostics: Vec::new(),
        subtests: None,
    })
}

/// Splits `description # DIRECTIVE text`; only the KTAP directive keywords count, so a `#` in a
/// description stays part of it.
fn split_directive(rest: &str) -> (&str, Option<(String, String)>) {
    const KEYWORDS: [&str; 5] = ["SKIP", "TODO", "XFAIL", "TIMEOUT", "ERROR"];
    let mut search_from = 0;
    while let Some(found) = rest.get(search_from..).and_then(|r| r.find('#')) {
        let at = search_from + found;
        let after = rest.get(at + 1..).unwrap_or("").trim_start();
        let word_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let word = after.get(..word_len).unwrap_or("").to_ascii_uppercase();
        if KEYWORDS.contains(&word.as_str()) {
            let text = after.get(word_len..).unwrap_or("").trim().to_owned();
            return (rest.get(..at).unwrap_or("").trim_end(), Some((word, text)));
        }
        search_from = at + 1;
    }
    (rest.trim_end(), None)
}

fn diagnostic_text(content: &str) -> Option<&str> {
    let rest = content.strip_prefix('#')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Document {
        parse(text.lines())
    }

    #[test]
    fn flat_document_with_diagnostics() {
        let d = doc(
            "KTAP version 1\n1..3\n# kernel 6.12\nok 1 first\nnot ok 2 second\n\
                     # expected: 4\n# seen: 3\nok 3 - third\n",
        );
        assert!(d.has_version);
        assert_eq!(
            d.plan,
            Some(Plan {
                count: 3,
                skip_reason: None
            })
        );
        assert_eq!(d.diagnostics, ["kernel 6.12"]);
        assert_eq!(d.results.len(), 3);
        assert_eq!(d.results[0].status, Status::Pass);
        assert_eq!(d.results[1].status, Status::Fail);
        assert_eq!(d.results[1].diagnostics, ["expected: 4", "seen: 3"]);
        assert_eq!(d.results[2].description, "third");
        assert!(d.problems.is_empty() && d.other.is_empty());
    }

    #[test]
    fn skip_is_its_own_status_on_ok_and_not_ok() {
        let d =
            doc("KTAP version 1\n1..3\nok 1 a # SKIP no device\nnot ok 2 b # skip\nok 3 c#SKIP x");
        assert_eq!(
            d.results
                .iter()
                .map(|r| r.status.clone())
                .collect::<Vec<_>>(),
            [
                Status::Skip {
                    reason: "SKIP no device".into()
                },
                Status::Skip {
                    reason: "SKIP".into()
                },
                Status::Skip {
                    reason: "SKIP x".into()
                },
            ]
        );
        assert_eq!(d.results[0].description, "a");
    }

    #[test]
    fn a_hash_that_is_not_a_directive_stays_in_the_description() {
        let d = doc("1..1\nok 1 issue #3 works # TODO later");
        assert_eq!(d.results[0].description, "issue #3 works");
        assert_eq!(
            d.results[0].status,
            Status::Skip {
                reason: "TODO later".into()
            }
        );
        let d = doc("1..1\nok 1 issue #3 works");
        assert_eq!(d.results[0].description, "issue #3 works");
        assert_eq!(d.results[0].status, Status::Pass);
    }

    #[test]
    fn timeout_and_error_directives_fail() {
        let d = doc("1..2\nok 1 a # TIMEOUT 30s\nnot ok 2 b # ERROR bad");
        assert_eq!(d.results[0].status, Status::Fail);
        assert_eq!(d.results[1].status, Status::Fail);
    }

    #[test]
    fn nested_subtests_attach_to_the_following_parent() {
        let d = doc(
            "KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: suite_a\n    1..2\n    \
             ok 1 case_1\n    not ok 2 case_2\n    # diag\nnot ok 1 suite_a\nok 2 plain",
        );
        assert_eq!(d.results.len(), 2);
        let sub = d.results[0].subtests.as_ref();
        assert_eq!(sub.map(|s| s.results.len()), Some(2));
        assert_eq!(
            sub.map(|s| s.diagnostics.clone()),
            Some(vec!["Subtest: suite_a".to_owned()])
        );
        assert_eq!(
            sub.map(|s| s.results[1].diagnostics.clone()),
            Some(vec!["diag".to_owned()])
        );
        assert_eq!(d.results[1].subtests, None);
        assert!(d.problems.is_empty());
    }

    #[test]
    fn two_levels_of_nesting() {
        let d = doc(
            "KTAP version 1\n1..1\n    KTAP version 1\n    1..1\n        KTAP version 1\n        \
             1..1\n        ok 1 leaf\n    ok 1 middle\nok 1 top",
        );
        let middle = d.results[0].subtests.as_ref().map(|s| &s.results[0]);
        let leaf = middle
            .and_then(|m| m.subtests.as_ref())
            .map(|s| &s.results[0]);
        assert_eq!(leaf.map(|l| l.description.as_str()), Some("leaf"));
    }

    #[test]
    fn kernel_lines_and_stderr_are_kept_aside() {
        let d = doc("KTAP version 1\n1..2\nok 1 a\n[    3.1] virtio_gpu: something\nthread panicked\nok 2 b");
        assert_eq!(d.results.len(), 2);
        assert_eq!(
            d.other,
            ["[    3.1] virtio_gpu: something", "thread panicked"]
        );
    }

    #[test]
    fn a_trailing_plan_is_accepted() {
        let d = doc("TAP version 13\nok 1 a\nok 2 b\n1..2");
        assert_eq!(d.plan.map(|p| p.count), Some(2));
        assert!(d.problems.is_empty());
    }

    #[test]
    fn misnumbered_results_and_second_plans_are_problems() {
        let d = doc("KTAP version 1\n1..3\nok 1 a\nok 3 c\n1..3");
        assert_eq!(d.problems.len(), 2, "{:?}", d.problems);
        assert!(d.problems[0].contains("numbered 3 where 2"));
    }

    #[test]
    fn subtests_without_a_parent_result_are_a_problem() {
        let d = doc("KTAP version 1\n1..1\n    KTAP version 1\n    1..2\n    ok 1 x\n");
        assert!(d.results.is_empty());
        assert_eq!(d.problems.len(), 1);
        assert!(d.problems[0].contains("inside a subtest block"));
    }

    #[test]
    fn indented_lines_without_ktap_are_not_subtests() {
        let d = doc(
            "KTAP version 1\n1..2\nok 1 a\nthread 'main' panicked at x.rs:1:1:\n   0: f\n   1: g\n",
        );
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        assert_eq!(
            d.other,
            ["thread 'main' panicked at x.rs:1:1:", "   0: f", "   1: g"]
        );
        let d = doc("KTAP version 1\n1..2\n  note\nok 1 a\nok 2 b");
        assert_eq!(d.results[0].subtests, None);
        assert_eq!(d.other, ["  note"]);
    }

    #[test]
    fn skipped_plan_and_missing_plan() {
        let d = doc("KTAP version 1\n1..0 # SKIP no hardware");
        assert_eq!(
            d.plan,
            Some(Plan {
                count: 0,
                skip_reason: Some("SKIP no hardware".into())
            })
        );
        let d = doc("KTAP version 1\nok 1 a");
        assert_eq!(d.plan, None);
        assert_eq!(d.results.len(), 1);
    }

    #[test]
    fn no_ktap_at_all() {
        let d = doc("Segmentation fault\n");
        assert!(!d.has_version && d.plan.is_none() && d.results.is_empty());
        assert_eq!(d.other, ["Segmentation fault"]);
    }

    #[test]
    fn lines_that_only_look_like_results_are_not() {
        let d = doc("1..1\nok 1a\nokay\nok 1 real");
        assert_eq!(d.results.len(), 1);
        assert_eq!(d.results[0].description, "real");
        assert_eq!(d.other, ["ok 1a", "okay"]);
    }
}
