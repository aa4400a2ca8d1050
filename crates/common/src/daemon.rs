//! Process conventions every daemon shares (docs/interfaces.md, "Every daemon"):
//! flag parsing with exit code 64 on bad usage, the one `listening on IP:PORT` line on stdout,
//! and the error → exit-code mapping.
//!
//! | code | meaning |
//! |---|---|
//! | 0  | clean exit (also after SIGTERM/SIGINT and a bounded drain) |
//! | 1  | any other failure (I/O, bind, runtime) |
//! | 64 | bad flags or bad config; the message names the file and key/line where known |

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

/// Exit code for bad usage or bad configuration (BSD `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// Exit code for any other failure.
pub const EXIT_FAILURE: u8 = 1;

/// An error that carries its exit code: [`UsageError`] maps to 64, everything else to 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parses the command line; `--help`/`--version` print and exit 0, anything else wrong prints
/// clap's message and exits 64 (clap's own default would be 2).
pub fn parse_args<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(v) => v,
        Err(e) => {
            let code = if e.use_stderr() { i32::from(EXIT_USAGE) } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    }
}

/// Prints the readiness line `listening on IP:PORT` to stdout and flushes it. The only thing a
/// daemon ever writes to stdout.
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not kill the daemon; the line is then simply lost.
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

/// Maps the outcome of a daemon's `main` to its exit code, printing the error chain to stderr
/// (and to the log). A [`UsageError`] or [`crate::formats::FormatError`] anywhere in the chain
/// means exit 64.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let usage = err.chain().any(|e| e.is::<UsageError>() || e.is::<crate::formats::FormatError>());
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::from(if usage { EXIT_USAGE } else { EXIT_FAILURE })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_map_to_64_others_to_1() {
        assert_eq!(exit_code(Ok(())), ExitCode::SUCCESS);
        let usage: anyhow::Result<()> = Err(anyhow::Error::new(UsageError("bad --listen".into())).context("starting"));
        assert_eq!(exit_code(usage), ExitCode::from(64));
        let other: anyhow::Result<()> = Err(anyhow::anyhow!("bind failed"));
        assert_eq!(exit_code(other), ExitCode::from(1));
    }
}
