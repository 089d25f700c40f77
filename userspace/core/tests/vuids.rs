//! `VUIDS.md` is the table of every Valid Usage rule extmem checks and the tests that cover
//! it. It is hand-kept, so this test keeps it honest: every `Vuid` of `error.rs` has a row,
//! every row is a current `Vuid`, and every test a row names exists and mentions the rule.

use std::collections::BTreeSet;
use std::path::Path;

use extmem::Vuid;

/// The rows of the table: `(VUID string, the row's text)`.
fn rows(table: &str) -> Vec<(&str, &str)> {
    table
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| `VUID-")?;
            let end = rest.find('`')?;
            Some((&line[3..3 + "VUID-".len() + end], line))
        })
        .collect()
}

/// The `path::function` test references of a row.
fn tests_of(row: &str) -> Vec<(&str, &str)> {
    row.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|quoted| quoted.rsplit_once("::"))
        .filter(|(path, _)| path.ends_with(".rs"))
        .collect()
}

/// The text of `fn name` in `source`: from its line to the next item at its indentation
/// or less (the next `fn`, `#[test]` or closing brace of its module).
fn function_body<'a>(source: &'a str, name: &str) -> Option<&'a str> {
    let start = source.find(&format!("fn {name}("))?;
    let line_start = source[..start].rfind('\n').map_or(0, |at| at + 1);
    let header = &source[line_start..];
    let indent = header.len() - header.trim_start().len();
    let mut end = source[start..]
        .find('\n')
        .map_or(source.len(), |at| start + at + 1);
    for line in source[end..].split_inclusive('\n') {
        let trimmed = line.trim_start();
        let depth = line.len() - trimmed.len();
        if !trimmed.trim_end().is_empty() && depth <= indent && !trimmed.starts_with('}') {
            break;
        }
        end += line.len();
    }
    Some(&source[start..end])
}

#[test]
fn every_vuid_has_a_row_naming_existing_tests_that_mention_it() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.join("../..");
    let table = std::fs::read_to_string(crate_dir.join("VUIDS.md")).expect("VUIDS.md");
    let rows = rows(&table);
    let known: BTreeSet<&str> = Vuid::ALL.iter().map(|v| v.id()).collect();
    for (id, _) in &rows {
        assert!(
            known.contains(id),
            "VUIDS.md lists {id}, which error.rs no longer has"
        );
    }
    for vuid in Vuid::ALL {
        let variant = format!("Vuid::{vuid:?}");
        let matching: Vec<_> = rows.iter().filter(|(id, _)| *id == vuid.id()).collect();
        assert_eq!(
            matching.len(),
            1,
            "{} needs exactly one row in VUIDS.md",
            vuid.id()
        );
        let tests = tests_of(matching[0].1);
        assert!(!tests.is_empty(), "the row of {} names no test", vuid.id());
        for (path, function) in tests {
            let source = std::fs::read_to_string(root.join(path))
                .unwrap_or_else(|e| panic!("{path}, named for {}: {e}", vuid.id()));
            let body = function_body(&source, function)
                .unwrap_or_else(|| panic!("{path} has no fn {function} (named for {})", vuid.id()));
            assert!(
                body.contains(&variant),
                "{path}::{function} is named for {} but does not mention {variant}",
                vuid.id()
            );
        }
    }
}

#[test]
fn the_table_parser_reads_ids_and_test_references() {
    let row = "| `VUID-VkX-y-01234` | text (`Name`) | `VK_ERROR_X` | `a/b.rs::one`, `c.rs::two` |";
    assert_eq!(rows(row), [("VUID-VkX-y-01234", row)]);
    assert_eq!(tests_of(row), [("a/b.rs", "one"), ("c.rs", "two")]);
    let source = "fn a() {\n    x();\n}\n\n#[test]\nfn b() {\n    y();\n}\nmod m {\n    fn c() {\n        z();\n    }\n    fn d() {}\n}\n";
    assert_eq!(
        function_body(source, "a"),
        Some("fn a() {\n    x();\n}\n\n")
    );
    assert_eq!(function_body(source, "b"), Some("fn b() {\n    y();\n}\n"));
    assert_eq!(
        function_body(source, "c"),
        Some("fn c() {\n        z();\n    }\n")
    );
    assert_eq!(function_body(source, "e"), None);
}
