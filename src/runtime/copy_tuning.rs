//! glibc's copy routine tuned for AMD CPUs: `memcpy`/`memmove` without `rep movsb`.
//!
//! glibc (2.33 and later, e.g. Debian 12 under Proxmox VE 8) copies blocks of more than about
//! 2 KiB (`x86_rep_movsb_threshold`, 2112 bytes on this machine) with `rep movsb`. On the AMD
//! EPYC this project is measured on, that path runs at a fraction of the speed of glibc's own
//! AVX loop for the copies the data path cannot avoid (rustls copies every record's plaintext
//! into the buffer it encrypts in, then the ciphertext into the socket buffer). Connector CPU
//! per GB, 1 GiB transfers through the built-in edge, same build, the tunable below off / on,
//! two pairs each:
//! download 2.19 / 2.08 -> 1.45 / 1.36 s, https origin download 2.54 / 2.56 -> 2.34 / 2.24 s,
//! upload 1.63 / 1.60 -> 1.59 / 1.53 s. Copies under 2 KiB never took that path, so small
//! requests are unchanged.
//!
//! The switch is a glibc tunable (`glibc.cpu.x86_rep_movsb_threshold`) that glibc reads only
//! from the environment when the process starts. So, before anything else runs, `main` calls
//! [`reexec_tuned`]: on an AMD CPU, when `GLIBC_TUNABLES` does not already name that tunable,
//! the binary executes itself again, through the same path it was started by (a `cloudflared`
//! symlink stays `cloudflared` in `ps`), with the same arguments, the same PID and the tunable
//! added to the environment, and [`REEXEC_MARK`] so that it happens once (nothing else changes;
//! a failed exec just carries on untuned). A process in secure-execution mode (setuid or file
//! capabilities), where glibc ignores tunables, is left alone. Tools that follow a program
//! only until it executes something (valgrind without `--trace-children=yes`) would lose it at
//! that point: run them with `RINGFLARE_COPY_TUNING=1` to skip the re-execution.
//! Whoever sets the tunable themselves keeps their value: to run with glibc's default, set
//! `GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=2048`.

#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};

/// The glibc tunable that sets the smallest copy done with `rep movsb`.
pub const TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold";

/// Above every copy the data path makes (TLS records are at most 16 KiB, socket and body
/// buffers at most 260 KiB, flow-control windows 1 MiB), so those stay on glibc's vector loop.
pub const THRESHOLD: u64 = 16 * 1024 * 1024;

/// Set in the re-executed process's environment: it never re-executes again, whatever glibc
/// made of `GLIBC_TUNABLES` (in secure-execution mode, e.g. a binary with file capabilities run
/// by a non-root user, glibc erases the tunable from the environment it hands the program, and
/// without this the process executed itself forever).
pub const REEXEC_MARK: &str = "RINGFLARE_COPY_TUNING";

/// Whether glibc runs this process in secure-execution mode (`AT_SECURE` in the auxiliary
/// vector: setuid, setgid or file capabilities): it then ignores the tunable, so there is
/// nothing to re-execute for. `auxv` is `/proc/self/auxv` (native-endian u64 pairs).
pub fn secure_exec(auxv: &[u8]) -> bool {
    const AT_SECURE: u64 = 23;
    auxv.chunks_exact(16).any(|pair| {
        let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
        word(&pair[..8]) == AT_SECURE && word(&pair[8..]) != 0
    })
}

/// The `GLIBC_TUNABLES` value to run with, or `None` to leave the environment alone: not an
/// AMD CPU, or the tunable is already set (by the user, or by the re-execution).
pub fn tuned_env(current: Option<&OsStr>, amd: bool) -> Option<OsString> {
    if !amd {
        return None;
    }
    let name = TUNABLE.rsplit('.').next().unwrap_or(TUNABLE);
    match current {
        Some(c) if c.to_string_lossy().contains(name) => None,
        Some(c) if !c.is_empty() => {
            let mut v = c.to_os_string();
            v.push(format!(":{TUNABLE}={THRESHOLD}"));
            Some(v)
        }
        _ => Some(format!("{TUNABLE}={THRESHOLD}").into()),
    }
}

/// glibc on x86_64: the only build whose copies the tunable reaches (musl has no tunables,
/// other architectures no `rep movsb`).
pub const GLIBC_X86_64: bool = cfg!(all(target_env = "gnu", target_arch = "x86_64"));

/// Whether this machine's CPU is an AMD one (from `/proc/cpuinfo`).
pub fn amd_cpu() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| cpu_is_amd(&c))
}

/// Whether `/proc/cpuinfo` names an AMD CPU.
pub fn cpu_is_amd(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("vendor_id"))
        .is_some_and(|l| l.trim_end().ends_with("AuthenticAMD"))
}

/// Re-executes this binary with the copy tunable when [`tuned_env`] asks for it; returns
/// when it does not, or when the exec failed (the process then runs untuned). Call first in
/// `main`, before any thread starts.
pub fn reexec_tuned() {
    use std::os::unix::process::CommandExt;

    if !GLIBC_X86_64
        || std::env::var_os(REEXEC_MARK).is_some()
        || std::fs::read("/proc/self/auxv").map_or(true, |a| secure_exec(&a))
    {
        return;
    }
    let Some(value) = tuned_env(std::env::var_os("GLIBC_TUNABLES").as_deref(), amd_cpu()) else {
        return;
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let path = launch_path(&arg0, &exe, std::env::var_os("PATH").as_deref());
    // Only returns on failure (e.g. the binary was replaced on disk meanwhile).
    let _ = std::process::Command::new(path)
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", value)
        .env(REEXEC_MARK, "1")
        .exec();
}

/// The path to execute again: the one this process was started through when it still names
/// this binary (so a `cloudflared` symlink keeps the process name `cloudflared`: the kernel
/// names a process after the path it executes, and `ps`, `pgrep`, systemd and log parsers
/// see that name), else the binary itself.
fn launch_path(
    arg0: &OsStr,
    exe: &std::path::Path,
    path_var: Option<&OsStr>,
) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    let id = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let Some(target) = id(exe) else {
        return exe.to_path_buf();
    };
    let started: Option<PathBuf> = if arg0.as_bytes().contains(&b'/') {
        Some(PathBuf::from(arg0))
    } else {
        // A bare name was looked up in PATH (the shell, systemd, execvp): look it up again.
        path_var.and_then(|dirs| {
            std::env::split_paths(dirs)
                .map(|d| d.join(arg0))
                .find(|p| id(p).is_some())
        })
    };
    match started {
        Some(p) if id(&p) == Some(target) => p,
        _ => exe.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_tunable_on_amd_only_and_keeps_the_users_value() {
        let want = format!("{TUNABLE}={THRESHOLD}");
        assert_eq!(tuned_env(None, true), Some(want.clone().into()));
        assert_eq!(tuned_env(Some(OsStr::new("")), true), Some(want.into()));
        assert_eq!(tuned_env(None, false), None);
        assert_eq!(
            tuned_env(Some(OsStr::new("glibc.malloc.check=0")), true),
            Some(format!("glibc.malloc.check=0:{TUNABLE}={THRESHOLD}").into())
        );
        // Set by the user (or by the re-execution itself): left alone, so it runs once.
        assert_eq!(
            tuned_env(
                Some(OsStr::new("glibc.cpu.x86_rep_movsb_threshold=2048")),
                true
            ),
            None
        );
    }

    #[test]
    fn reads_at_secure_from_the_auxiliary_vector() {
        let auxv = |pairs: &[(u64, u64)]| -> Vec<u8> {
            pairs
                .iter()
                .flat_map(|(k, v)| [k.to_ne_bytes(), v.to_ne_bytes()].concat())
                .collect()
        };
        assert!(!secure_exec(&auxv(&[(6, 4096), (23, 0), (0, 0)])));
        assert!(secure_exec(&auxv(&[(6, 4096), (23, 1), (0, 0)])));
        assert!(!secure_exec(&[]));
        // This test process is not setuid.
        assert!(!secure_exec(&std::fs::read("/proc/self/auxv").unwrap()));
    }

    #[test]
    fn reads_the_vendor_from_cpuinfo() {
        let amd = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n";
        let intel = "processor\t: 0\nvendor_id\t: GenuineIntel\n";
        assert!(cpu_is_amd(amd));
        assert!(!cpu_is_amd(intel));
        assert!(!cpu_is_amd(""));
    }
}
