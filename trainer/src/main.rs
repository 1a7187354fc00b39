//! `affinity-trainer`: turns event logs and catalogues into a versioned affinity model.
//!
//! Subcommands: `import` converts public data sets to the canonical CSV files, `train`
//! learns and publishes a model directory, `split` writes train/valid/test files, `tune`
//! searches parameters on validation, `evaluate` compares affinity with baselines on a
//! held-out split. All algorithms live in `affinity-core`; this binary is the CLI,
//! input loading and progress display around them.

mod cli;
mod evaluate;
mod input;
mod progress;
mod tune;

use anyhow::Result;
use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = cli::Cli::parse();
    if let Err(e) = run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: cli::Cli) -> Result<()> {
    match args.command {
        cli::Command::Import(a) => input::import(a),
        cli::Command::Train(a) => input::train(a),
        cli::Command::Evaluate(a) => evaluate::run(a),
        cli::Command::Split(a) => input::split(a),
        cli::Command::Tune(a) => tune::run(a),
    }
}
