//! `switchyard health`: asks a running hub's admin endpoint whether it is alive (`/healthz`)
//! or ready (`/readyz`), for container health checks and scripts; no curl needed.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::cli::ConfigArgs;
use crate::config;

/// Most bytes of an answer read (the probes answer a line).
const MAX_ANSWER: u64 = 64 * 1024;

/// Arguments of `switchyard health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The URL to ask, e.g. `http://127.0.0.1:9090/readyz` (default: `/healthz`, or
    /// `/readyz` with --ready, on the configuration's `admin.listen`).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Ask `/readyz` (every required bridge up) instead of `/healthz` (the process answers).
    #[arg(long, conflicts_with = "url")]
    pub ready: bool,
    /// How long to wait for the connection and the answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Configuration files (read for `admin.listen` when there is no --url).
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Exits successfully when the endpoint answers 200; prints the answer either way.
pub fn health(args: &HealthArgs) -> anyhow::Result<()> {
    let (address, path) = match &args.url {
        Some(url) => parse_url(url)?,
        None => (
            admin_address(&args.config.files)?,
            if args.ready { "/readyz" } else { "/healthz" }.to_owned(),
        ),
    };
    let (status, body) = get(address, &path, args.timeout)
        .with_context(|| format!("http://{address}{path}: no answer"))?;
    print!("{status} {body}");
    if !body.ends_with('\n') {
        println!();
    }
    if status != 200 {
        bail!("http://{address}{path} answered {status}");
    }
    Ok(())
}

/// The configured admin address, with an unspecified address (`0.0.0.0`, `::`) asked on
/// loopback.
fn admin_address(files: &[PathBuf]) -> anyhow::Result<SocketAddr> {
    let (settings, _) = config::load(files)?;
    let listen = settings.admin.listen;
    if listen.is_empty() {
        bail!("admin.listen is \"\" (the admin endpoint is off); give --url or turn it on");
    }
    let mut address = resolve(&listen).with_context(|| format!("admin.listen = {listen:?}"))?;
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(address)
}

fn resolve(authority: &str) -> anyhow::Result<SocketAddr> {
    authority
        .to_socket_addrs()
        .with_context(|| format!("expected host:port, found {authority:?}"))?
        .next()
        .with_context(|| format!("{authority:?} resolves to no address"))
}

/// Splits `http://host:port/path` into the address and the path.
fn parse_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("--url: expected http://host:port/path, found {url:?}");
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/healthz"),
    };
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((resolve(&authority).context("--url")?, path.to_owned()))
}

/// One HTTP/1.1 GET; the status code and body.
fn get(address: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nUser-Agent: switchyard-health\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("expected an HTTP answer, found no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("expected an HTTP status line, found {head:?}"))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn urls_name_address_and_path() {
        let (address, path) = parse_url("http://127.0.0.1:9090/readyz").unwrap();
        assert_eq!((address.port(), path.as_str()), (9090, "/readyz"));
        let (address, path) = parse_url("http://127.0.0.1").unwrap();
        assert_eq!((address.port(), path.as_str()), (80, "/healthz"));
        assert!(parse_url("https://x:1/")
            .unwrap_err()
            .to_string()
            .contains("http://"));
    }
}
