//! One file per subcommand; [`run`] dispatches.

pub mod bottles;
pub mod doctor;
pub mod start;

use std::process::ExitCode;

use crate::cli::{Cli, Command, SchemaKind};
use crate::home::Home;
use crate::manifest::types::{AgentFile, BottleFile};

/// Runs one `bot-bottle` command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Schema(args) => {
            let schema = match args.kind {
                SchemaKind::Bottle => crate::manifest::schema::<BottleFile>(),
                SchemaKind::Agent => crate::manifest::schema::<AgentFile>(),
            };
            let text = serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n";
            std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let home = Home::from_env()?;
            match command {
                Command::Start(args) => start::run(args, &home).await,
                Command::Ls(args) => bottles::ls(args, &home).await,
                Command::Stop(args) => bottles::stop(args, &home).await,
                Command::Cleanup(args) => bottles::cleanup(args, &home).await,
                Command::Image(cmd) => crate::image::run(cmd, &home).await.map(|()| ExitCode::SUCCESS),
                Command::Doctor => doctor::run(&home).await,
                Command::Supervise(args) => tokio::task::spawn_blocking(move || crate::supervise::run(&home, args))
                    .await?
                    .map(|()| ExitCode::SUCCESS),
                Command::Schema(_) => unreachable!("handled above"),
            }
        }
    }
}
