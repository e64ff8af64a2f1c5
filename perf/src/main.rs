//! `ringmq-perf`: a load tool for any AMQP 0-9-1 broker (ringmq, RabbitMQ, ...).
//! Wiring only: parse the command, run a scenario (or a compare, or a plot), print results.

mod client;
mod clock;
mod compare;
mod confirm;
mod diskfloor;
mod error;
mod limits;
mod many;
mod message;
mod opts;
mod pingpong;
mod plot;
mod poller;
mod progress;
mod recovery;
mod report;
mod scale;
mod scenarios;
mod schedule;
mod soak;
mod topology;
mod tracker;
mod transport;
mod url;
mod workers;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::compare::Side;
use crate::error::{PerfError, Result};
use crate::opts::Opts;
use crate::report::Report;

#[derive(Parser)]
#[command(
    name = "ringmq-perf",
    about = "AMQP 0-9-1 load tool: throughput, latency, compare"
)]
struct Cli {
    /// Print JSON on stdout instead of the human table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// Producers -> queues -> consumers as fast as the broker sustains.
    Throughput(Opts),
    /// Open-loop fixed-rate latency (--rate or --sweep).
    Latency(Opts),
    /// One producer to a fanout exchange bound to --queues queues.
    Fanout(Opts),
    /// A topic exchange with --bindings patterns.
    Topic(Opts),
    /// --connections connections, each publishing at --rate and consuming.
    Connections(Opts),
    /// Fill a queue with --messages then drain it.
    Backlog(Opts),
    /// Loopback TCP echo at --rate: the machine's latency floor.
    Pingpong(Opts),
    /// Publisher-confirm latency (open loop at --rate/--sweep, or --max-rate with a --confirm
    /// window); use --persistent for a durable queue and delivery-mode 2.
    Confirm(Opts),
    /// Publish --messages into --queue (left in place), confirmed when --confirm is set.
    Fill(Opts),
    /// --connections connections that handshake, open a channel and sit idle: accept rate and
    /// (with --pid) broker RSS per connection.
    Idle(Opts),
    /// Declare --queues queues on one connection, then delete them: rates and (with --pid)
    /// broker RSS per queue.
    Declare(Opts),
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Scenario(Scenario),
    /// Run a scenario against two brokers alternately; medians and ratios.
    Compare {
        #[arg(long)]
        a: String,
        #[arg(long)]
        b: String,
        #[arg(long, default_value = "a")]
        a_label: String,
        #[arg(long, default_value = "b")]
        b_label: String,
        #[arg(long)]
        a_pid: Option<u32>,
        #[arg(long)]
        b_pid: Option<u32>,
        /// Poll this management API URL during a's runs only (overrides the scenario's
        /// --poll-api for that side; --pollers and --poll-interval-ms still apply).
        #[arg(long)]
        a_poll_api: Option<String>,
        /// As --a-poll-api, for b: `--a URL --b URL --b-poll-api API` compares one broker
        /// not polled and polled.
        #[arg(long)]
        b_poll_api: Option<String>,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Also write the comparison's JSON here (e.g. for `plot`).
        #[arg(long)]
        save: Option<PathBuf>,
        #[command(subcommand)]
        scenario: Scenario,
    },
    /// The device's floor: 4 KiB O_DIRECT write + fdatasync latency in --dir.
    DiskFloor(diskfloor::DiskFloorOpts),
    /// Replay speed and disk bytes per message from a restarted ringmq's log.
    RecoveryReport(recovery::RecoveryOpts),
    /// Hours of mixed load against a broker perf/soak.sh restarts; checks every confirmed
    /// message arrives; RSS, fds and p99 over time.
    Soak(soak::SoakOpts),
    /// Prints a queue's message count (passive declare).
    Depth {
        #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
        url: String,
        #[arg(long)]
        queue: String,
    },
    /// PNG of latency percentiles vs rate from sweep or compare JSON files.
    Plot {
        #[arg(long, required = true)]
        input: Vec<PathBuf>,
        /// Series labels for plain sweep files, in --input order.
        #[arg(long)]
        label: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "latency vs offered rate")]
        title: String,
    },
}

impl Scenario {
    fn opts(&self) -> &Opts {
        match self {
            Scenario::Throughput(o)
            | Scenario::Latency(o)
            | Scenario::Fanout(o)
            | Scenario::Topic(o)
            | Scenario::Connections(o)
            | Scenario::Backlog(o)
            | Scenario::Pingpong(o)
            | Scenario::Confirm(o)
            | Scenario::Fill(o)
            | Scenario::Idle(o)
            | Scenario::Declare(o) => o,
        }
    }

    fn run(&self, opts: &Opts) -> Result<Vec<Report>> {
        opts.validate()?;
        match self {
            Scenario::Throughput(_) => scenarios::throughput(opts),
            Scenario::Latency(_) => scenarios::latency(opts),
            Scenario::Fanout(_) => scenarios::fanout(opts),
            Scenario::Topic(_) => scenarios::topic(opts),
            Scenario::Connections(_) => scenarios::connections(opts),
            Scenario::Backlog(_) => scenarios::backlog(opts),
            Scenario::Pingpong(_) => pingpong::pingpong(opts),
            Scenario::Confirm(_) => confirm::confirm(opts),
            Scenario::Fill(_) => recovery::fill(opts),
            Scenario::Idle(_) => scale::idle(opts),
            Scenario::Declare(_) => scale::declare(opts),
        }
    }
}

fn main() {
    let cli = Cli::parse();
    clock::tighten_timer_slack();
    if let Err(error) = run(cli) {
        eprintln!("ringmq-perf: {error}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Scenario(scenario) => {
            let reports = scenario.run(scenario.opts())?;
            if cli.json {
                let list: Vec<_> = reports.iter().map(Report::to_json).collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for report in &reports {
                    print!("{}", report.table());
                }
            }
            Ok(())
        }
        Command::Compare {
            a,
            b,
            a_label,
            b_label,
            a_pid,
            b_pid,
            a_poll_api,
            b_poll_api,
            runs,
            save,
            scenario,
        } => {
            if !(1..=limits::RUNS_MAX).contains(&runs) {
                return Err(PerfError::Args("--runs out of range".into()));
            }
            let a = Side {
                label: a_label,
                url: a,
                pid: a_pid,
                poll_api: a_poll_api,
            };
            let b = Side {
                label: b_label,
                url: b,
                pid: b_pid,
                poll_api: b_poll_api,
            };
            let comparison = compare::compare(scenario.opts(), [&a, &b], runs, |o| scenario.run(o));
            if let Some(path) = save {
                std::fs::write(path, comparison.to_json().to_string())?;
            }
            if cli.json {
                println!("{}", comparison.to_json());
            } else {
                print!("{}", comparison.table());
            }
            Ok(())
        }
        Command::Soak(opts) => soak::soak(&opts),
        Command::DiskFloor(opts) => print_report(&diskfloor::disk_floor(&opts)?, cli.json),
        Command::RecoveryReport(opts) => print_report(&recovery::recovery_report(&opts)?, cli.json),
        Command::Depth { url, queue } => {
            let mut conn = client::Conn::open(&url::AmqpUrl::parse(&url)?)?;
            let depth = topology::queue_depth(&mut conn, &queue)?;
            conn.close();
            println!("{depth}");
            Ok(())
        }
        Command::Plot {
            input,
            label,
            out,
            title,
        } => {
            let mut series = Vec::new();
            for (index, path) in input.iter().enumerate() {
                let default = path.display().to_string();
                let name = label.get(index).unwrap_or(&default);
                series.extend(plot::load_series(path, name)?);
            }
            plot::plot(&series, &out, &title)
        }
    }
}

fn print_report(report: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
