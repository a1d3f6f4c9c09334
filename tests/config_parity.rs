//! `tunnel --config F ingress validate` and `ingress rule URL` on configs written to probe how a
//! config file is read (Go regex dialect, yaml.v3 typing and errors, document shape, Go URL
//! printing, flag-valued keys), compared with what stock cloudflared 2026.8.2 printed for the
//! same files: stdout, the first line of stderr and the exit code.
//!
//! The cases and cloudflared's outputs live in tests/fixtures/config_parity/expected.json,
//! recorded by record.py beside it (cases in cases.py) from the real binary, run in a
//! loopback-only network namespace. Nothing here derives an expected value from ringflare.

use std::process::Command;

use serde_json::Value;

fn first_line(text: &str) -> &str {
    text.split('\n').next().unwrap_or("")
}

/// cloudflared's log lines start with an RFC 3339 time; the recording replaced it by TIMESTAMP.
fn mask_timestamp(line: &str) -> String {
    let bytes = line.as_bytes();
    let stamped = bytes.len() > 21
        && bytes[4] == b'-'
        && bytes[10] == b'T'
        && bytes[19] == b'Z'
        && bytes[20] == b' ';
    if stamped {
        format!("TIMESTAMP {}", &line[21..])
    } else {
        line.to_owned()
    }
}

/// YAML syntax errors outside the classes above whose wording or line still differs from
/// libyaml's (the parser under yaml.v3): both programs refuse the file, with different text.
const KNOWN_DIFFERENCES: &[&str] = &["yaml_unclosed_flow", "yaml_bad_indent"];

#[test]
fn config_files_read_as_cloudflared_reads_them() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/config_parity/expected.json"
    );
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let results = recorded["results"].as_array().unwrap();
    assert!(results.len() > 200, "the recording holds every case");
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in results {
        let name = case["case"].as_str().unwrap();
        let command = case["command"].as_str().unwrap();
        let cfg = dir.path().join(format!("{name}.yml"));
        std::fs::write(&cfg, case["config"].as_str().unwrap()).unwrap();
        let cfg = cfg.display().to_string();
        let mut args = vec!["tunnel", "--config", &cfg, "ingress"];
        if command == "validate" {
            args.push("validate");
        } else {
            args.extend(["rule", command]);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_ringflare"))
            .args(&args)
            .env_clear()
            .env("HOME", home.path())
            .output()
            .expect("run ringflare");
        let stdout = String::from_utf8_lossy(&out.stdout).replace(&cfg, "{cfg}");
        let stderr = String::from_utf8_lossy(&out.stderr).replace(&cfg, "{cfg}");
        let got = (
            i64::from(out.status.code().unwrap_or(-1)),
            stdout,
            mask_timestamp(first_line(&stderr)),
        );
        let want = (
            case["code"].as_i64().unwrap(),
            case["stdout"].as_str().unwrap().to_owned(),
            case["stderr_first_line"].as_str().unwrap().to_owned(),
        );
        if KNOWN_DIFFERENCES.contains(&name) {
            assert_eq!((got.0, &got.1), (want.0, &want.1), "{name}: still refused");
            continue;
        }
        if got != want {
            failures.push(format!(
                "{name} [{command}]\n  want {want:?}\n  got  {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ from cloudflared:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}
