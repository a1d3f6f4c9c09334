//! The binary's `tunnel ingress validate|rule`, `--version` and `--help`, checked byte for byte
//! against cloudflared's output and exit codes.

use std::path::Path;
use std::process::Command;

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

fn ringflare(args: &[&str], env: &[(&str, &str)]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringflare"));
    cmd.args(args).env_clear().env("HOME", home.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run ringflare");
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const GOOD: &str = "ingress:\n  - hostname: a.example.com\n    service: http://localhost:8000\n  - hostname: \"*.b.example.com\"\n    path: ^/api\n    service: https://localhost:8443\n  - service: http_status:404\n";

#[test]
fn validate_ok() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "config.yml", GOOD);
    let r = ringflare(&["tunnel", "--config", &cfg, "ingress", "validate"], &[]);
    assert_eq!(r.stdout, format!("Validating rules from {cfg}\nOK\n"));
    assert_eq!((r.stderr.as_str(), r.code), ("", 0));
}

#[test]
fn validate_failure_prints_validation_failed_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.yml",
        "ingress:\n  - hostname: a.com\n    service: http://x\n",
    );
    let r = ringflare(&["tunnel", "--config", &cfg, "ingress", "validate"], &[]);
    assert_eq!(r.stdout, format!("Validating rules from {cfg}\n"));
    assert_eq!(
        r.stderr,
        "Validation failed: The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)\n"
    );
    assert_eq!(r.code, 1);
}

#[test]
fn validate_unknown_keys_warns_instead_of_ok() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.yml",
        "ingress:\n  - service: http://x\n    originRequest:\n      noTlsVerify: true\n",
    );
    let r = ringflare(&["tunnel", "--config", &cfg, "ingress", "validate"], &[]);
    assert_eq!(
        r.stdout,
        format!(
            "Validating rules from {cfg}\nWarning: unused keys detected in your config file. Here is a list of unused keys:\nyaml: unmarshal errors:\n  line 4: field noTlsVerify not found in type config.OriginRequestConfig\n"
        )
    );
    assert_eq!(r.code, 0);
}

#[test]
fn validate_with_url_flag_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.yml", GOOD);
    let r = ringflare(
        &["tunnel", "--config", &cfg, "ingress", "validate"],
        &[("TUNNEL_URL", "http://x")],
    );
    assert_eq!(
        r.stderr,
        "You can't set the --url flag (or $TUNNEL_URL) when using multiple-origin ingress rules\n"
    );
    assert_eq!(r.code, 1);
}

#[test]
fn validate_json_flag() {
    let json = r#"{"ingress":[{"service":"http_status:404"}]}"#;
    let r = ringflare(&["tunnel", "ingress", "validate", "--json", json], &[]);
    assert_eq!(r.stdout, "Validating rules from cmdline flag --json\nOK\n");
    assert_eq!(r.code, 0);
}

#[test]
fn no_config_file_found() {
    let r = ringflare(&["tunnel", "ingress", "validate"], &[]);
    assert_eq!(
        r.stderr,
        "No configuration file was found. Please create one, or use the --config flag to specify its filepath. You can use the help command to learn more about configuration files\n"
    );
    assert_eq!(r.code, 1);
}

#[test]
fn default_search_path_finds_home_cloudflared() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".cloudflared")).unwrap();
    let cfg = write(&home.path().join(".cloudflared"), "config.yaml", GOOD);
    let out = Command::new(env!("CARGO_BIN_EXE_ringflare"))
        .args(["tunnel", "ingress", "validate"])
        .env_clear()
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Validating rules from {cfg}\nOK\n")
    );
}

#[test]
fn rule_prints_zero_based_match_and_details() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "config.yml", GOOD);
    let r = ringflare(
        &[
            "tunnel",
            "--config",
            &cfg,
            "ingress",
            "rule",
            "https://x.b.example.com/api/v1",
        ],
        &[],
    );
    assert_eq!(
        r.stdout,
        format!(
            "Using rules from {cfg}\nMatched rule #1\n\thostname: *.b.example.com\n\tpath: ^/api\n\tservice: https://localhost:8443\n"
        )
    );
    assert_eq!(r.code, 0);
    let r = ringflare(
        &[
            "tunnel",
            "--config",
            &cfg,
            "ingress",
            "rule",
            "https://a.example.com:8443/",
        ],
        &[],
    );
    assert!(r.stdout.ends_with(
        "Matched rule #0\n\thostname: a.example.com\n\tservice: http://localhost:8000\n"
    ));
    let r = ringflare(
        &[
            "tunnel",
            "--config",
            &cfg,
            "ingress",
            "rule",
            "http://elsewhere/",
        ],
        &[],
    );
    assert!(
        r.stdout
            .ends_with("Matched rule #2\n\tservice: http_status:404\n")
    );
}

#[test]
fn rule_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "config.yml", GOOD);
    let r = ringflare(&["tunnel", "--config", &cfg, "ingress", "rule"], &[]);
    assert_eq!(
        r.stderr,
        "cloudflared tunnel rule expects a single argument, the URL to test\n"
    );
    assert_eq!(r.code, 1);
    let r = ringflare(
        &["tunnel", "--config", &cfg, "ingress", "rule", "example.com"],
        &[],
    );
    assert_eq!(
        r.stderr,
        "example.com doesn't have a hostname, consider adding a scheme\n"
    );
    assert_eq!(r.code, 1);
    let r = ringflare(
        &["tunnel", "--config", &cfg, "ingress", "rule", "http://a b/"],
        &[],
    );
    assert_eq!(r.stderr, "http://a b/ is not a valid URL\n");
}

#[test]
fn yaml_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.yml",
        "ingress:\n  - service: http://x\n    originRequest:\n      connectTimeout: 30\n",
    );
    let r = ringflare(&["tunnel", "--config", &cfg, "ingress", "validate"], &[]);
    // What cloudflared 2026.8.2 prints for this file.
    assert_eq!(
        r.stderr,
        format!(
            "error parsing YAML in config file at {cfg}: yaml: unmarshal errors:\n  line 4: cannot unmarshal !!int `30` into time.Duration\n"
        )
    );
    assert_eq!((r.stdout.as_str(), r.code), ("", 1));
}

#[test]
fn missing_explicit_config_is_an_error() {
    let r = ringflare(
        &[
            "tunnel",
            "--config",
            "/nonexistent/c.yml",
            "ingress",
            "validate",
        ],
        &[],
    );
    assert_eq!(
        r.stderr,
        "open /nonexistent/c.yml: no such file or directory\n"
    );
    assert_eq!(r.code, 1);
}

#[test]
fn flag_errors_print_help_and_exit_0_as_cloudflared() {
    // cloudflared 2026.8.2 (urfave/cli) prints the error and the help on stdout, exit 0.
    let r = ringflare(&["tunnel", "--nope", "ingress", "validate"], &[]);
    assert!(
        r.stdout
            .starts_with("Incorrect Usage. flag provided but not defined: -nope\n\n"),
        "{}",
        r.stdout
    );
    assert_eq!(r.code, 0);
}

#[test]
fn version_and_help() {
    let r = ringflare(&["--version"], &[]);
    assert!(r.stdout.starts_with("ringflare version "), "{}", r.stdout);
    let r = ringflare(&["tunnel", "run", "--help"], &[]);
    assert!(r.stdout.contains("--token"));
    assert!(r.stdout.contains("$TUNNEL_TOKEN"));
    assert!(
        !r.stdout.contains("--edge "),
        "tunnel flags are not listed under run"
    );
    assert_eq!(r.code, 0);
}
