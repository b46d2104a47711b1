//! What integration tests share: the real hub binary on free ports, real brokers, real
//! clients. Use it from a test file with `mod support;`.
//!
//! # Layout
//! - [`process`]: free ports, temporary directories, external programs (with time limits),
//!   the Python of the test virtualenv.
//! - [`hub`]: [`Hub`] runs `switchyard run` from this workspace and talks to its admin HTTP
//!   API; [`run_hub_command`] runs one-shot subcommands (`check`, `route`).
//! - [`http`]: a minimal HTTP/1.1 GET client for the admin API (sync and async).
//! - [`metrics`]: parsing Prometheus text and selecting series.
//! - [`mqtt`]: [`mqtt::MqttClient`], an MQTT 5 test client that records what it receives.
//! - [`tls`]: test certificates (a CA, server and client certificates) made with openssl.
//! - [`mosquitto`]: [`Mosquitto`], a private Mosquitto broker on a free port, for tests
//!   that stop or restart "the remote broker".
//! - [`mosquitto_clients`]: `mosquitto_pub`, and `mosquitto_sub` waited on until subscribed.
//! - [`proxy`]: [`proxy::TcpProxy`], a TCP forwarder to a shared broker that a test can
//!   start late or cut, so one hub's connection fails without disturbing other tests.
//! - [`redis`]: [`redis::RedisServer`], a private redis-server on a free port, with
//!   `redis-cli` and redis-py clients.
//! - [`rabbitmq`]: [`rabbitmq::Rabbit`], a lapin client of the shared RabbitMQ, and
//!   `rabbitmqctl` helpers (queue counts, closing one named connection).
//! - [`rabbitmq_node`]: [`rabbitmq_node::RabbitNode`], a private RabbitMQ node with its own
//!   ports and configuration (a TLS listener), stopped on drop.
//!
//! Tests never skip silently: a missing tool panics with the command that installs it
//! (`scripts/test`). Every wait is bounded, and the panic says what was awaited.
//!
//! Each test binary compiles this module on its own and uses only part of it, hence
//! the module-wide `allow(dead_code)`; the re-exports carry `allow(unused_imports)` for the
//! same reason.
#![allow(dead_code)]

pub mod http;
pub mod hub;
pub mod metrics;
pub mod mosquitto;
pub mod mosquitto_clients;
pub mod mqtt;
pub mod process;
pub mod proxy;
pub mod rabbitmq;
pub mod rabbitmq_node;
pub mod redis;
pub mod tls;

#[allow(unused_imports)]
pub use hub::{hub_command, hub_with_broker, run_hub_command, Hub, HubBuilder};
#[allow(unused_imports)]
pub use mosquitto::Mosquitto;
#[allow(unused_imports)]
pub use process::{
    free_port, free_ports, poll, poll_async, python, require_command, run_with_timeout,
    wait_for_port, TestDir,
};
