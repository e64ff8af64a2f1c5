//! `ringmqctl`: rabbitmqctl's verbs against ringmq's management API (see `ringmq::ctl`).

use std::io::Write as _;

fn main() {
    let outcome = ringmq::ctl::run(std::env::args().collect(), |name| std::env::var(name).ok());
    // A closed pipe (`ringmqctl list_queues | head`) is not worth a panic; the code still says.
    let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    std::process::exit(outcome.code);
}
