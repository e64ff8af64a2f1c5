//! `ringmq`: starts the broker. Wiring only: configuration, logging, the shards.

use std::io::Write;

use ringmq::config::Config;

fn main() {
    let config = match Config::load_from_args() {
        Ok(config) => config,
        Err(error) => {
            // --help and --version come through here too, with exit code 0.
            if error.exit_code() == 0 {
                println!("{error}");
            } else {
                eprintln!("ringmq: {error}");
            }
            std::process::exit(error.exit_code());
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(format!("ringmq={}", config.log_level))
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    tracing::info!(shards = config.shards, port = config.port, listen = ?config.listen, "starting");

    let shards = config.shards;
    let result = ringmq::shard::runtime::run(&config, |addresses| {
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
