//! RabbitMQ-compatible management HTTP API (RabbitMQ 3.10.8's paths, JSON and status codes), so
//! `rabbitmqadmin` and operators' scripts work unchanged.
//!
//! - `http`: hyper HTTP/1.1 on glommio, one task per connection, bounded.
//! - `api`: authentication (basic auth against the stored hash), tags, the request/response
//!   types; `routes`: the path table and handlers; `definitions`: export/import.
//! - `objects`, `json`, `listing`: RabbitMQ's JSON shapes, pagination and `columns=`.
//! - `prometheus`: the Prometheus text endpoint (`/metrics`, `/metrics/per-object`) on its own
//!   port, over the same backend.
//! - `shards`: ringmq's own `/api/ringmq/shards` (per-shard busy time, hosted connections and
//!   queues, mesh links, log and delivery latency histograms).
//! - `ui`: the web UI's pages and assets, built into the binary, served for every path that is
//!   not under /api (its one door: [`ui::serve`]).
//! - `backend`: the one trait through which the API reaches the broker; `fake`: an in-memory
//!   implementation for tests.

pub mod api;
pub mod apply;
pub mod backend;
pub mod definitions;
pub mod fake;
pub mod http;
pub mod json;
pub mod listing;
pub mod objects;
pub mod parameters;
pub mod policies;
pub mod prometheus;
pub mod rates;
pub mod routes;
pub mod shard_backend;
pub mod shards;
pub mod ui;
pub mod vhost_limits;

#[cfg(test)]
mod tests;
