//! The `facegate` command: argument parsing and wiring only.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use facegate::config::Config;
use facegate::vision::FaceEngine;

#[derive(Parser)]
#[command(
    name = "facegate",
    version,
    about = "Face recognition gateway for residential estates"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "config/facegate.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Accuracy on a folder DIR/<identity>/*.jpg.
    Eval {
        #[arg(long)]
        dataset: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("facegate: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let config = if cli.config.exists() {
        Config::load(&cli.config)?
    } else {
        Config::default()
    };
    match cli.command {
        Command::Eval { dataset, json } => {
            let mut engine = FaceEngine::new(&config).context("starting the face engine")?;
            let r = facegate::eval::run(&mut engine, &dataset)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
        }
    }
    Ok(())
}
