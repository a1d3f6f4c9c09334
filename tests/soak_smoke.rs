//! `ringflare bench soak --quick`: the built-in edge, the connector and the benchmark origin as
//! real processes on loopback, a normal load beside every attack of issue 10 for ~12 s. Only
//! what must hold on any machine is asserted: no failed normal request, no tunnel connection
//! lost, neither process gone, descriptors back near their start after the attacks.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringflare");

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

#[test]
fn quick_soak_keeps_the_normal_load_and_the_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["bench", "soak", "--quick", "--json", "--work-dir"])
        .arg(dir.path())
        .output()
        .expect("run bench soak");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench soak failed: {stderr}");
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bench soak --json printed no JSON ({e}): {stderr}"));
    eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());

    // The attacks really ran: every attacker opened connections and sent something.
    let attacks = r["attacks"].as_array().expect("attacks");
    assert_eq!(attacks.len(), 9, "{attacks:?}");
    for a in attacks {
        assert!(u(a, "/connections") > 0, "attack never connected: {a}");
        assert!(u(a, "/sent") > 0, "attack sent nothing: {a}");
    }
    assert!(u(&r, "/normal/requests") > 0, "no normal request completed");
    assert!(u(&r, "/tunnel/ha_connections_start") > 0);
    for p in ["edge", "connector"] {
        assert!(u(&r, &format!("/{p}/fds_start")) > 0);
        assert!(u(&r, &format!("/{p}/rss_peak_kib")) > 0);
    }

    // What must hold.
    assert_eq!(
        u(&r, "/normal/errors"),
        0,
        "normal requests failed: {}",
        r["normal"]
    );
    assert_eq!(
        u(&r, "/tunnel/connections_lost"),
        0,
        "tunnel lost: {}",
        r["tunnel"]
    );
    let violations = r["violations"].as_array().expect("violations");
    assert!(violations.is_empty(), "{violations:?}");
}
