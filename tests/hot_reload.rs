//! Hot reload: SIGHUP and file changes swap the table; a bad file keeps the running one.
//! Runs in its own test binary because it installs a SIGHUP handler for the process.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use ringflare::config::parse_config;
use ringflare::control::reload::{ReloadEvent, Reloader, TableBuilder, Trigger};
use ringflare::ingress::{Ingress, IngressTable, Matched, RuleIndex, SharedIngress};

const V1: &str = "ingress:\n  - hostname: a.com\n    service: http://localhost:1\n  - service: http_status:404\n";
const V2: &str = "ingress:\n  - hostname: b.com\n    service: http://localhost:2\n  - hostname: a.com\n    service: http://localhost:1\n  - service: http_status:404\n";
const BAD: &str = "ingress:\n  - hostname: c.com\n    service: http://localhost:3\n";
const WAIT: Duration = Duration::from_secs(10);

fn builder() -> TableBuilder {
    Box::new(|file| Ok(IngressTable::new(Ingress::from_config(&file.raw)?)))
}

fn setup(dir: &Path) -> (std::path::PathBuf, Arc<SharedIngress>) {
    let path = dir.join("config.yml");
    std::fs::write(&path, V1).unwrap();
    let file = parse_config(V1, &path).unwrap();
    let table = IngressTable::new(Ingress::from_config(&file.raw).unwrap());
    (path, Arc::new(SharedIngress::new(table)))
}

fn rule_for(shared: &SharedIngress, host: &str) -> Matched {
    shared.load().find(host, "/")
}

#[test]
fn manual_reload_applies_and_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let (path, shared) = setup(dir.path());
    let mut reloader = Reloader::new(path.clone(), Arc::clone(&shared), Some(V1), builder());
    assert_eq!(reloader.reload(Trigger::Manual), ReloadEvent::Unchanged);

    let held = shared.load();
    std::fs::write(&path, V2).unwrap();
    assert_eq!(
        reloader.reload(Trigger::Manual),
        ReloadEvent::Applied {
            generation: 1,
            rules: 3
        }
    );
    assert_eq!(rule_for(&shared, "b.com"), Matched::Rule(RuleIndex(0)));
    // A request that loaded the old table before the swap still sees the old one.
    assert_eq!(held.find("b.com", "/"), Matched::Rule(RuleIndex(1)));

    std::fs::write(&path, BAD).unwrap();
    match reloader.reload(Trigger::Manual) {
        ReloadEvent::Rejected { error, line } => {
            assert_eq!(line, 3);
            assert!(
                error.starts_with(&format!("{}:3: ", path.display())),
                "{error}"
            );
            assert!(
                error.contains("The last ingress rule must match all URLs"),
                "{error}"
            );
        }
        other => panic!("expected rejection, got {other:?}"),
    }
    assert_eq!(
        rule_for(&shared, "b.com"),
        Matched::Rule(RuleIndex(0)),
        "running table kept"
    );

    std::fs::write(&path, "ingress: [\n").unwrap();
    assert!(
        matches!(reloader.reload(Trigger::Manual), ReloadEvent::Rejected { line, .. } if line >= 1)
    );
}

#[test]
fn sighup_and_file_change_trigger_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let (path, shared) = setup(dir.path());
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    // Polling off first: only the signal can trigger.
    let reloader =
        Reloader::new(path.clone(), Arc::clone(&shared), Some(V1), builder()).with_events(tx);
    let handle = reloader.spawn(Duration::ZERO, Arc::clone(&stop)).unwrap();

    std::fs::write(&path, V2).unwrap();
    signal_hook::low_level::raise(signal_hook::consts::SIGHUP).unwrap();
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap(),
        ReloadEvent::Applied {
            generation: 1,
            rules: 3
        }
    );
    assert_eq!(rule_for(&shared, "b.com"), Matched::Rule(RuleIndex(0)));

    std::fs::write(&path, BAD).unwrap();
    signal_hook::low_level::raise(signal_hook::consts::SIGHUP).unwrap();
    assert!(matches!(
        rx.recv_timeout(WAIT).unwrap(),
        ReloadEvent::Rejected { line: 3, .. }
    ));
    assert_eq!(rule_for(&shared, "b.com"), Matched::Rule(RuleIndex(0)));
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();

    // Now with polling: a file change alone is enough.
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let reloader =
        Reloader::new(path.clone(), Arc::clone(&shared), Some(V2), builder()).with_events(tx);
    let handle = reloader
        .spawn(Duration::from_millis(20), Arc::clone(&stop))
        .unwrap();
    let v3 = V1.replace("localhost:1", "localhost:9");
    std::fs::write(&path, &v3).unwrap();
    assert!(matches!(
        rx.recv_timeout(WAIT).unwrap(),
        ReloadEvent::Applied { rules: 2, .. }
    ));
    assert_eq!(rule_for(&shared, "b.com"), Matched::Rule(RuleIndex(1)));
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}
