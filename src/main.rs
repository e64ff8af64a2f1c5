//! `ringmq`: starts the broker. Wiring only: configuration, logging, the shards.

use std::io::{IsTerminal, Write};

use ringmq::config::{Config, LogFormat};

fn main() {
    let config = match Config::load_from_args() {
        Ok(config) => config,
        Err(error) => {
            // --help and --version come through here too, with exit code 0.
            if error.exit_code() == 0 {
                // `ringmq --help | head` closes the pipe early: not an error worth a panic.
                let _ = writeln!(std::io::stdout(), "{error}");
            } else {
                eprintln!("ringmq: {error}");
            }
            std::process::exit(error.exit_code());
        }
    };
    init_logging(&config);
    match ringmq::shard::boot::AccessBoot::from_config(
        &config,
        ringmq::management::apply::import_at_boot,
    ) {
        Ok(boot) => ringmq::shard::boot::configure(boot),
        Err(message) => {
            eprintln!("ringmq: {message}");
            std::process::exit(1);
        }
    }
    tracing::info!(shards = config.shards, port = config.port, listen = ?config.listen, "starting");

    let shards = config.shards;
    let result = ringmq::runtime::run(&config, |addresses| {
        let first = addresses
            .first()
            .map_or_else(|| "?".to_string(), |a| a.to_string());
        // Tests and scripts wait for this exact line on stdout.
        println!("ringmq ready on {first} shards={shards}");
        let _ = std::io::stdout().flush();
    });
    if let Err(message) = result {
        eprintln!("ringmq: {message}");
        std::process::exit(1);
    }
}

/// Logs go to stderr. Colour codes only when it is a terminal: in a file, journald or a log
/// shipper they are stored as garbage.
fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("ringmq={}", config.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}
