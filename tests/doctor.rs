//! `ringflare doctor` run for real on this host: it must finish, print every check with a
//! verdict, and its exit code must agree with its FAIL lines. The verdicts themselves depend on
//! the host and are tested on fixtures in `doctor::checks`.

use std::process::Command;

use ringflare::doctor::checks::CHECK_NAMES;

const BIN: &str = env!("CARGO_BIN_EXE_ringflare");

#[test]
fn doctor_prints_every_check_and_exits_by_its_verdicts() {
    for extra in [&[][..], &["--io-driver", "io_uring"][..]] {
        let out = Command::new(BIN)
            .arg("doctor")
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        for name in CHECK_NAMES {
            let line = text
                .lines()
                .find(|l| l.get(7..).is_some_and(|rest| rest.starts_with(name)))
                .unwrap_or_else(|| panic!("no line for {name} in:\n{text}"));
            assert!(
                ["[ OK ]", "[WARN]", "[FAIL]"]
                    .iter()
                    .any(|v| line.starts_with(v)),
                "{line}"
            );
        }
        let fails = text.lines().filter(|l| l.starts_with("[FAIL]")).count();
        assert!(text.contains(&format!("{fails} fail")), "{text}");
        assert_eq!(
            out.status.code(),
            Some(if fails > 0 { 1 } else { 0 }),
            "{text}"
        );
    }
    let out = Command::new(BIN)
        .args(["doctor", "--io-driver", "kqueue"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
