//! The `facegate` binary: CLI front end over the vision (and later gallery/server) crates.

mod cmd_models;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "facegate",
    version,
    about = "Private-by-construction face recognition for border control"
)]
struct Cli {
    /// Where models and the runtime live (default: $FACEGATE_HOME or ~/.local/share/facegate).
    #[arg(long, global = true, env = "FACEGATE_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, list and check model packs.
    Models {
        #[command(subcommand)]
        command: cmd_models::ModelsCommand,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<i32> {
    let home = cli.home.unwrap_or_else(vision::pack::default_home);
    match cli.command {
        Command::Models { command } => cmd_models::run(&home, command),
    }
}
