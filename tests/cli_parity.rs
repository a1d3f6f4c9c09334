//! ringflare's command line against what the real cloudflared 2026.8.2 printed for the same
//! invocations (tests/fixtures/cloudflared/observed/, recorded by record.sh from cases.txt in a
//! loopback-only netns). The program name is normalised; help texts are compared by their
//! first line (ringflare's help is its own), messages and exit codes exactly.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ringflare");
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cloudflared");

/// How much of the output must match.
enum Compare {
    /// stdout's first line, stderr empty (flag errors: the rest is help text).
    FirstStdoutLine,
    /// stderr byte for byte.
    Stderr,
    /// stderr's first line (the rest is cloudflared's quick-tunnel advice).
    FirstStderrLine,
    /// One token on stdout (a version number: ours differs from cloudflared's).
    VersionToken,
}

const CASES: &[(&str, Compare)] = &[
    ("version_short", Compare::VersionToken),
    ("version_short_alias", Compare::VersionToken),
    ("unknown_tunnel_flag", Compare::FirstStdoutLine),
    ("unknown_app_flag", Compare::FirstStdoutLine),
    ("run_flag_at_tunnel_level", Compare::FirstStdoutLine),
    ("flag_needs_arg", Compare::FirstStdoutLine),
    ("bad_bool", Compare::FirstStdoutLine),
    ("run_no_tunnel", Compare::Stderr),
    ("run_token_file_missing", Compare::Stderr),
    ("run_bad_token", Compare::Stderr),
    ("run_two_args", Compare::Stderr),
    ("ready_no_metrics", Compare::Stderr),
    ("ready_refused", Compare::Stderr),
    ("tunnel_no_args", Compare::FirstStderrLine),
    ("unknown_command", Compare::FirstStderrLine),
];

fn args_of(name: &str) -> Vec<String> {
    let cases = std::fs::read_to_string(Path::new(DIR).join("cases.txt")).unwrap();
    let line = cases
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no case {name}"));
    line.split(' ').skip(1).map(str::to_owned).collect()
}

fn observed(name: &str, ext: &str) -> String {
    std::fs::read_to_string(
        Path::new(DIR)
            .join("observed")
            .join(format!("{name}.{ext}")),
    )
    .unwrap()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[test]
fn messages_and_exit_codes_match_cloudflared() {
    let home = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    for (name, how) in CASES {
        let out = Command::new(BIN)
            .args(args_of(name))
            .env_clear()
            .env("HOME", home.path())
            .output()
            .unwrap();
        let norm = |b: &[u8]| String::from_utf8_lossy(b).replace("ringflare", "cloudflared");
        let (stdout, stderr) = (norm(&out.stdout), norm(&out.stderr));
        let (want_out, want_err) = (observed(name, "out"), observed(name, "err"));
        let want_rc: i32 = observed(name, "rc").trim().parse().unwrap();
        let rc = out.status.code().unwrap_or(-1);
        if rc != want_rc {
            problems.push(format!("{name}: exit {rc}, cloudflared {want_rc}"));
        }
        let ok = match how {
            Compare::FirstStdoutLine => {
                first_line(&stdout) == first_line(&want_out) && stderr.is_empty()
            }
            Compare::Stderr => stderr == want_err,
            Compare::FirstStderrLine => first_line(&stderr) == first_line(&want_err),
            Compare::VersionToken => {
                let one = |s: &str| s.ends_with('\n') && s.split_whitespace().count() == 1;
                one(&stdout) && one(&want_out)
            }
        };
        if !ok {
            problems.push(format!(
                "{name}: got\n  stdout {stdout:?}\n  stderr {stderr:?}\nwant\n  stdout {:?}\n  stderr {want_err:?}",
                first_line(&want_out)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
