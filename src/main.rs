//! The `s3crypt` command: `serve` and `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use s3crypt::{Config, Server};

#[derive(Parser)]
#[command(version, about = "Transparent encrypting reverse proxy in front of S3")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem found.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let (Command::Serve { config } | Command::CheckConfig { config }) = &cli.command;
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Command::CheckConfig { config: path } = &cli.command {
        println!("{}: OK", path.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("s3crypt: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("s3crypt: {e}");
                return ExitCode::FAILURE;
            }
        };
        s3crypt::server::announce(&server);
        server.run(s3crypt::signal::shutdown()).await;
        ExitCode::SUCCESS
    })
}
