//! The `ringflare` binary: parses the command line and hands off to the library.

use std::collections::HashMap;
use std::process::ExitCode;

use ringflare::cli::{self, Command};

/// mimalloc, built without transparent huge pages (the `no_thp` feature: it never asks for
/// them with `madvise`). With them, every 2 MiB region of the heap that a stream touches is
/// resident whole: at 2,000 idle WebSockets (bench ws-idle, 4 HA connections) the connector
/// held 26 MiB at rest and 14.4 KiB per stream with them, 15 MiB and 7.4 KiB without.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before anything else runs: may execute this binary again with glibc's copy routine
    // tuned for AMD CPUs (see the module).
    ringflare::runtime::copy_tuning::reexec_tuned();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let env: HashMap<String, String> = std::env::vars().collect();
    let outcome = match argv.first().map(String::as_str) {
        Some("bench") => return ringflare::bench::main(&argv[1..]),
        Some("doctor") => {
            let driver = env
                .get(ringflare::runtime::IO_DRIVER_ENV)
                .map(String::as_str);
            return ringflare::doctor::main(&argv[1..], driver);
        }
        Some("demo") => ringflare::connector::demo::run(&argv[1..], env),
        Some("edge") => ringflare::edge::run_cli(&argv[1..], &env),
        // cloudflared's command line: app-level flags, `tunnel ...`, `service ...`, ...
        _ => match cli::app(&argv, env) {
            Command::Done(outcome) => outcome,
            Command::TunnelRun(run) => ringflare::connector::run(*run),
        },
    };
    print!("{}", outcome.stdout);
    eprint!("{}", outcome.stderr);
    ExitCode::from(u8::try_from(outcome.code).unwrap_or(1))
}
