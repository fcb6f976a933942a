//! Golden files for every output format, from the fixed flows in
//! `common`. Regenerate after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p observe-cli --test golden` and review the diff.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::path::PathBuf;

use flowd_proto::observer::GetFlowsResponse;
use observe_cli::format::{Options, Printer};
use observe_cli::format::{OutputFormat, TimeFormat};

fn opts(format: OutputFormat) -> Options {
    Options {
        format,
        color: false,
        print_node_name: false,
        time_format: TimeFormat::StampMilli,
        utc: true,
        streaming: false,
    }
}

/// stdout, then a `--- stderr ---` line, then stderr.
pub fn render(o: Options, responses: &[GetFlowsResponse]) -> String {
    let mut p = Printer::new(o, Vec::new(), Vec::new());
    for r in responses {
        p.response(r).unwrap();
    }
    p.finish().unwrap();
    let (out, err) = p.into_inner();
    format!(
        "{}--- stderr ---\n{}",
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap()
    )
}

fn check(name: &str, o: Options) {
    let got = render(o, &common::responses());
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(got, want, "output differs from {}", path.display());
}

#[test]
fn compact() {
    check("compact", opts(OutputFormat::Compact));
}

#[test]
fn compact_node_name_color_rfc3339() {
    check(
        "compact-node-color",
        Options {
            color: true,
            print_node_name: true,
            time_format: TimeFormat::Rfc3339Milli,
            ..opts(OutputFormat::Compact)
        },
    );
}

#[test]
fn dict() {
    check("dict", opts(OutputFormat::Dict));
}

#[test]
fn json() {
    check("json", opts(OutputFormat::Json));
}

#[test]
fn jsonpb_is_json() {
    assert_eq!(
        render(opts(OutputFormat::Jsonpb), &common::responses()),
        render(opts(OutputFormat::Json), &common::responses())
    );
}

#[test]
fn json_lines_parse_back_to_the_responses() {
    let text = render(opts(OutputFormat::Json), &common::responses());
    let (stdout, stderr) = text.split_once("--- stderr ---\n").unwrap();
    assert_eq!(stderr, "");
    let parsed: Vec<GetFlowsResponse> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, common::responses());
}

#[test]
fn table() {
    check("table", opts(OutputFormat::Table));
}

#[test]
fn table_with_node_names() {
    check(
        "table-node",
        Options {
            print_node_name: true,
            ..opts(OutputFormat::Table)
        },
    );
}

#[test]
fn table_streaming_prints_rows_as_they_come() {
    // While following, the header and every row are printed immediately.
    let o = Options {
        streaming: true,
        ..opts(OutputFormat::Table)
    };
    let mut p = Printer::new(o, Vec::new(), Vec::new());
    p.response(&common::responses()[0]).unwrap();
    let (out, _) = p.into_inner();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.starts_with("TIMESTAMP"));
}
