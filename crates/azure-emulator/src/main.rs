//! `azure-emulator`: a local emulator of Entra ID, Microsoft Graph, ARM, Azure Arc and IMDS.
//! See `docs/emulator.md` for the contract.

use std::io::Write;
use std::process::ExitCode;

use azure_emulator::{Config, Emulator, EmulatorError, USAGE};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EMULATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("azure-emulator: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("azure-emulator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("azure-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), EmulatorError> {
    let emulator = Emulator::start(config).await?;
    {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for (k, v) in emulator.env() {
            writeln!(out, "{k}={v}").map_err(|e| EmulatorError::io("stdout", e))?;
            out.flush().map_err(|e| EmulatorError::io("stdout", e))?;
        }
        writeln!(out, "READY").map_err(|e| EmulatorError::io("stdout", e))?;
        out.flush().map_err(|e| EmulatorError::io("stdout", e))?;
    }
    wait_for_signal().await?;
    tracing::info!("shutting down");
    emulator.shutdown();
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> Result<(), EmulatorError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| EmulatorError::io("SIGTERM handler", e))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| EmulatorError::io("SIGINT handler", e))?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> Result<(), EmulatorError> {
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| EmulatorError::io("Ctrl-C handler", e))
}
