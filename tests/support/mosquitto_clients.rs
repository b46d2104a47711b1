//! The Mosquitto command-line clients as independent MQTT clients: `mosquitto_pub` to
//! completion, and [`Subscriber`], a running `mosquitto_sub` that is known to be
//! subscribed (its `-d` output showed the SUBACK) before the test goes on.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::process::{require_command, run_with_timeout};

/// How long a client may take to connect, publish or subscribe.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `mosquitto_pub ARGS` to completion.
pub fn publish(args: &[&str]) -> Output {
    run_with_timeout(
        Command::new(require_command("mosquitto_pub")).args(args),
        CLIENT_TIMEOUT,
    )
}

/// A running `mosquitto_sub -d -v`: each line it prints, as it prints it.
pub struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Subscriber {
    /// Starts `mosquitto_sub -d -v ARGS` and waits for its SUBACK; panics with what it
    /// printed when it exits or times out first (e.g. a refused TLS handshake or login).
    pub fn start(args: &[&str]) -> Subscriber {
        // Line-buffered: piped, its stdout would otherwise hold the SUBACK line back.
        let mut child = Command::new(require_command("stdbuf"))
            .arg("-oL")
            .arg(require_command("mosquitto_sub"))
            .args(["-d", "-v"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mosquitto_sub");
        let (sender, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let sender = sender.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        let mut subscriber = Subscriber { child, lines };
        let seen = subscriber.until(|line| line.starts_with("Subscribed (mid"));
        assert!(seen.is_some(), "mosquitto_sub {args:?} did not subscribe");
        subscriber
    }

    /// Lines until one satisfies `wanted` (returned), or `None` when the client exits or
    /// [`CLIENT_TIMEOUT`] passes.
    pub fn until(&mut self, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = std::time::Instant::now() + CLIENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// The next message line (`TOPIC PAYLOAD`, as `-v` prints it) within `timeout`,
    /// skipping the debug lines.
    pub fn next_message(&mut self, timeout: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with("Client ") || line.starts_with("Subscribed (mid") => {}
                Ok(line) => return Some(line),
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
