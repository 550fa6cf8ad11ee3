use std::process::ExitCode;

use clap::Parser;
use tracer::{cli::Cli, run};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match EnvFilter::try_new(&cli.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: invalid --log-level '{}': {e}", cli.log_level);
            return ExitCode::from(2);
        }
    };
    let ansi = unsafe { libc::isatty(2) } == 1;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();

    // One thread: capture, decoding and OTLP export share it (capture never awaits export), and no
    // cross-thread wake-ups are paid per ring-buffer batch. Terminal/JSON output has its own thread.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(cli)) {
        Ok(run::Outcome::Clean) => ExitCode::SUCCESS,
        Ok(run::Outcome::ExportFailed(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(run::EXIT_EXPORT_FAILED as u8)
        }
        Err(e) => {
            // One line: the chain of causes, without a backtrace.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
