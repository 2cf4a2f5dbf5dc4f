//! Every server binary starts the same way (one shared entry point): `--help` and `--version`
//! print and exit 0, an unknown flag or a value of the wrong type exits 2 naming it, and a value
//! that parses but is out of range exits 2 naming its field, before anything is bound.

use outpost_tests::bin;
use std::process::{Command, Output};

fn run(binary: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    // No environment settings leak in, and nothing is written outside the temp dir.
    Command::new(bin(binary)).args(args).env_remove("RUST_LOG").env("OUTPOST_DATA_DIR", dir.path()).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Each binary, a flag of the wrong type, and a well-typed value its checks refuse (with the
/// field the message must name).
const SERVERS: [(&str, &str, [&str; 2], &str); 3] = [
    ("edge-node", "--max-rooms", ["--idle-timeout", "soon"], "idle_timeout"),
    ("region-router", "--max-nodes", ["--ticket-ttl", "soon"], "ticket_ttl"),
    ("core-region", "--max-scan", ["--max-scan", "0"], "max_scan"),
];

#[test]
fn help_and_version_exit_0_and_bad_flags_exit_2_naming_them() {
    for (binary, typed_flag, refused, field) in SERVERS {
        let o = run(binary, &["--help"]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{binary} --help: {err}");
        assert!(out.contains("Usage:") && out.contains("--data-dir") && out.contains("--ready-file"), "{out}");

        let o = run(binary, &["--version"]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{binary} --version: {err}");
        assert!(out.starts_with(binary) && out.contains(env!("CARGO_PKG_VERSION")), "{out}");

        let o = run(binary, &["--no-such-flag"]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{binary} --no-such-flag: {err}");
        assert!(err.contains("--no-such-flag"), "{err}");

        let o = run(binary, &[typed_flag, "lots"]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{binary} {typed_flag} lots: {err}");
        assert!(err.contains(typed_flag) && err.contains("lots"), "{err}");

        let o = run(binary, &refused);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{binary} {refused:?}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with(&format!("{binary}: ")) && first.contains(field), "{err}");
    }
}

#[test]
fn the_command_line_tools_answer_help_and_version_too() {
    for binary in ["outpost", "outpost-bench"] {
        for flag in ["--help", "--version"] {
            let o = run(binary, &[flag]);
            assert_eq!(o.status.code(), Some(0), "{binary} {flag}: {:?}", text(&o));
        }
        assert_eq!(run(binary, &["no-such-command"]).status.code(), Some(2));
    }
}
