//! The binary's start-up re-execution with glibc's copy tunable (`runtime::copy_tuning`),
//! checked on a real process: on an AMD CPU with glibc the running process has the tunable in
//! its environment, keeps its PID and its name, and runs once; a tunable the user set is
//! kept as it is; elsewhere the environment is untouched.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use ringflare::runtime::copy_tuning::{GLIBC_X86_64, THRESHOLD, TUNABLE, amd_cpu};

const BIN: &str = env!("CARGO_BIN_EXE_ringflare");

/// A `bench serve` child, killed on drop.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bench serve` with `GLIBC_TUNABLES` as given and waits until it listens (its first
/// line), so the re-execution, if any, is done.
fn serve(tunables: Option<&str>) -> Served {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("GLIBC_TUNABLES");
    if let Some(t) = tunables {
        cmd.env("GLIBC_TUNABLES", t);
    }
    start(cmd)
}

fn start(mut cmd: Command) -> Served {
    cmd.args([
        "bench",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
    ])
    .stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn bench serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.contains("http="),
        "bench serve did not start: {line:?}"
    );
    Served(child)
}

fn comm_of(pid: u32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    comm.trim_end().to_owned()
}

/// The running process's `GLIBC_TUNABLES`, read from /proc.
fn tunables_of(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("GLIBC_TUNABLES="))
        .map(str::to_owned)
}

fn glibc_x86_64_amd() -> bool {
    GLIBC_X86_64 && amd_cpu()
}

#[test]
fn the_running_process_carries_the_tunable_on_amd_only() {
    let served = serve(None);
    let pid = served.0.id();
    let got = tunables_of(pid);
    if glibc_x86_64_amd() {
        // Same PID: the spawned process itself was re-executed, not a child of it.
        assert_eq!(got, Some(format!("{TUNABLE}={THRESHOLD}")));
    } else {
        assert_eq!(got, None, "the environment changed off AMD/glibc");
    }
    // The process keeps its name (what ps, pgrep and systemd show).
    assert_eq!(comm_of(pid), "ringflare");
}

/// A drop-in install often links `cloudflared` to the binary: started through the link, by
/// path or by a bare name looked up in PATH, the process is still named `cloudflared` (and
/// tuned), as it would be without the re-execution.
#[test]
fn a_cloudflared_symlink_keeps_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("cloudflared");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let want = glibc_x86_64_amd().then(|| format!("{TUNABLE}={THRESHOLD}"));

    let mut by_path = Command::new(&link);
    by_path.env_remove("GLIBC_TUNABLES");
    let served = start(by_path);
    assert_eq!(comm_of(served.0.id()), "cloudflared");
    assert_eq!(tunables_of(served.0.id()), want);

    let mut by_name = Command::new("cloudflared");
    by_name.env_remove("GLIBC_TUNABLES").env("PATH", dir.path());
    let served = start(by_name);
    assert_eq!(comm_of(served.0.id()), "cloudflared");
    assert_eq!(tunables_of(served.0.id()), want);
}

#[test]
fn a_tunable_the_user_set_is_kept() {
    let mine = "glibc.cpu.x86_rep_movsb_threshold=2048";
    let served = serve(Some(mine));
    assert_eq!(tunables_of(served.0.id()).as_deref(), Some(mine));

    // Another tunable of the user's: kept, and the process runs. (What /proc shows of a
    // combined value is not checked: glibc rewrites GLIBC_TUNABLES in place while it parses
    // it at start-up, and 2.36 leaves only the first entry visible there, though
    // `ld.so --list-tunables` shows both applied.)
    let other = "glibc.malloc.check=0";
    let served = serve(Some(other));
    let got = tunables_of(served.0.id()).unwrap_or_default();
    assert!(got.starts_with(other), "{got:?}");
}

/// A binary with file capabilities run by a non-root user runs in glibc's secure-execution
/// mode, where glibc erases the tunable from the environment it hands the program: it must start
/// once, not execute itself forever (it once did). Needs root, `setcap` and `setpriv`; skipped
/// (and said) where they are missing.
#[test]
fn a_binary_with_file_capabilities_run_by_another_user_starts_once() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !rustix::process::geteuid().is_root() || !have("setcap") || !have("setpriv") {
        println!("skipped: needs root, setcap and setpriv");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("ringflare");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let capped = Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(&bin)
        .status()
        .is_ok_and(|s| s.success());
    if !capped {
        println!("skipped: this filesystem takes no file capabilities");
        return;
    }
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("--version")
        .env_remove("GLIBC_TUNABLES")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`ringflare --version` with file capabilities did not finish in 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(out.starts_with("ringflare version"), "{out:?}");
}
