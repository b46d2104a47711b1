//! Translation of topic levels between separator conventions, with lossless escaping.
//!
//! The hub separates levels with `/`; AMQP, ZeroMQ and Redis use `.`. A level that contains
//! the other side's separator is percent-encoded (`/` as `%2F`, `.` as `%2E`), and a `%` that
//! would otherwise be read as an escape is written `%25`. A stray `%` (one not followed by an
//! escape this side knows) is left alone, so names that never contained escapes cross
//! unchanged, and every level survives the trip there and back: `a.b/c` becomes the AMQP
//! name `a%2Eb.c` and comes back as `a.b/c`. The only names that change are those that
//! already spell an escape (`%25`, `%2F`, `%2E`) in their own namespace: those are decoded.

use crate::topic::LEVEL_SEPARATOR;

/// How a bridge's remote side spells names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Naming {
    /// The remote level separator: `/` for MQTT, `.` for AMQP, ZeroMQ and Redis.
    pub separator: char,
    /// Percent-encode separators inside levels (on by default; off mimics RabbitMQ's MQTT
    /// plugin, which lets `a.b/c` and `a/b/c` collide).
    pub escape: bool,
}

impl Naming {
    /// MQTT-style names: the same separator as the hub, so names cross unchanged.
    pub const MQTT: Naming = Naming {
        separator: LEVEL_SEPARATOR,
        escape: true,
    };

    /// Dot-separated names (AMQP routing keys, ZeroMQ topics, Redis channels).
    pub const DOTTED: Naming = Naming {
        separator: '.',
        escape: true,
    };

    /// Converts a remote name (without prefix) into hub levels joined by `/`.
    pub fn to_hub(&self, remote: &str, out: &mut String) {
        convert(remote, self.separator, LEVEL_SEPARATOR, self.escape, out);
    }

    /// Converts hub levels (without prefix) into a remote name.
    pub fn to_remote(&self, hub: &str, out: &mut String) {
        convert(hub, LEVEL_SEPARATOR, self.separator, self.escape, out);
    }

    /// Converts one literal hub level to its remote spelling.
    pub fn level_to_remote(&self, level: &str, out: &mut String) {
        if self.separator == LEVEL_SEPARATOR {
            out.push_str(level);
        } else if self.escape {
            let mut logical = String::new();
            decode_level(level, LEVEL_SEPARATOR, &mut logical);
            encode_level(&logical, self.separator, out);
        } else {
            out.push_str(level);
        }
    }
}

fn convert(name: &str, from: char, to: char, escape: bool, out: &mut String) {
    if from == to {
        out.push_str(name);
        return;
    }
    let plain = !name.contains(['%', to]);
    if plain || !escape {
        // Nothing to encode or decode: only the separators change.
        out.extend(name.chars().map(|c| if c == from { to } else { c }));
        return;
    }
    let mut logical = String::new();
    for (index, level) in name.split(from).enumerate() {
        if index > 0 {
            out.push(to);
        }
        logical.clear();
        decode_level(level, from, &mut logical);
        encode_level(&logical, to, out);
    }
}

/// The escape that stands for `separator` inside a level.
fn escape_of(separator: char) -> &'static str {
    match separator {
        '/' => "%2F",
        '.' => "%2E",
        _ => "",
    }
}

const PERCENT_ESCAPE: &str = "%25";

/// Replaces the escapes known in a `separator` namespace with the characters they stand for.
fn decode_level(level: &str, separator: char, out: &mut String) {
    let separator_escape = escape_of(separator);
    let mut rest = level;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if tail.starts_with(PERCENT_ESCAPE) {
            out.push('%');
            rest = &tail[3..];
        } else if !separator_escape.is_empty() && tail.starts_with(separator_escape) {
            out.push(separator);
            rest = &tail[3..];
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
}

/// Spells a level for a `separator` namespace: the separator and any `%` that would read
/// as an escape are encoded.
fn encode_level(level: &str, separator: char, out: &mut String) {
    let separator_escape = escape_of(separator);
    for (index, c) in level.char_indices() {
        if c == separator {
            out.push_str(separator_escape);
        } else if c == '%' {
            let tail = &level[index..];
            let reads_as_escape = tail.starts_with(PERCENT_ESCAPE)
                || (!separator_escape.is_empty() && tail.starts_with(separator_escape));
            out.push_str(if reads_as_escape { PERCENT_ESCAPE } else { "%" });
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_remote(naming: Naming, hub: &str) -> String {
        let mut out = String::new();
        naming.to_remote(hub, &mut out);
        out
    }

    fn to_hub(naming: Naming, remote: &str) -> String {
        let mut out = String::new();
        naming.to_hub(remote, &mut out);
        out
    }

    #[test]
    fn hub_names_survive_a_round_trip_through_dotted_names() {
        let cases: &[(&str, &str)] = &[
            ("a/b/c", "a.b.c"),
            ("a.b/c", "a%2Eb.c"),
            ("50%/x", "50%.x"),
            ("a%2Eb", "a%252Eb"),
            ("a%2Fb", "a/b"),
            ("fedora/prod/git/receive", "fedora.prod.git.receive"),
            ("é/日本", "é.日本"),
            ("a//c", "a..c"),
        ];
        for (hub, remote) in cases {
            assert_eq!(to_remote(Naming::DOTTED, hub), *remote, "hub {hub:?} out");
            assert_eq!(to_hub(Naming::DOTTED, remote), *hub, "remote {remote:?} in");
        }
    }

    #[test]
    fn names_that_spell_an_escape_are_decoded() {
        assert_eq!(to_remote(Naming::DOTTED, "%25/x"), "%.x");
        assert_eq!(to_hub(Naming::DOTTED, "%.x"), "%/x");
    }

    #[test]
    fn remote_names_survive_a_round_trip_through_the_hub() {
        for remote in ["x/y.z", "%2F.q", "a%2Eb.c", "100%.%", "%.%2", "%%2525"] {
            let hub = to_hub(Naming::DOTTED, remote);
            assert_eq!(to_remote(Naming::DOTTED, &hub), remote, "via hub {hub:?}");
        }
    }

    #[test]
    fn escaping_off_only_swaps_separators() {
        let naming = Naming {
            escape: false,
            ..Naming::DOTTED
        };
        assert_eq!(to_remote(naming, "a.b/c"), "a.b.c");
        assert_eq!(to_hub(naming, "a.b.c"), "a/b/c");
    }

    #[test]
    fn same_separator_is_identity() {
        assert_eq!(to_remote(Naming::MQTT, "a.b/%2E/c"), "a.b/%2E/c");
        assert_eq!(to_hub(Naming::MQTT, "x/%25"), "x/%25");
    }
}
