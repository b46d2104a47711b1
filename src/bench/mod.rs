//! `switchyard bench`: an open-loop load generator and latency probe that can be pointed
//! at any deployment, switchyard's or a peer's.
//!
//! Messages leave on a fixed schedule (`--rate`), whatever the receiving side does; each
//! carries its sequence number and its *scheduled* send time, so a stalled path shows up
//! as latency instead of silently slowing the sender down (no coordinated omission).
//! The receiver records latency = arrival - scheduled time in an HdrHistogram and counts
//! loss, duplicates and reordering from the sequence numbers.
//!
//! # Layout
//! - [`args`]: the command line of `switchyard bench`.
//! - [`endpoint`]: `--from`/`--to` URLs parsed into [`endpoint::Endpoint`]s.
//! - [`probe`]: the payload: run id, sequence number, scheduled time, padding.
//! - [`tally`]: the receiver's accounting (histogram, loss, duplicates, order).
//! - [`schedule`]: the open-loop sender, on its own thread.
//! - [`endpoints`]: one file per protocol, each with a publisher and a subscriber.
//! - [`trial`]: one measured run at one rate; [`sweep`]: the search for the highest rate
//!   that meets a loss and p99 bound.
//! - [`idle`]: `--idle`, many connections held open and silent (memory per connection).
//! - [`report`]: what a run found, as a table or JSON.
//! - [`error`]: [`BenchError`], what can stop a run.

pub mod args;
pub mod endpoint;
pub mod endpoints;
pub mod error;
pub mod idle;
pub mod probe;
pub mod report;
pub mod schedule;
pub mod sweep;
pub mod tally;
pub mod trial;

pub use args::BenchArgs;
pub use error::BenchError;
