//! The end-to-end benchmark (filled in below).

use clap::Args;

/// Flags of `bench e2e`.
#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    /// Tiny sizes, a few seconds in all (the CI smoke).
    #[arg(long)]
    pub quick: bool,
}

/// Runs the end-to-end benchmark.
pub fn main(_args: &E2eArgs) -> Result<(), String> {
    Err("not yet".into())
}
