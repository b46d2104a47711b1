//! Prometheus text exposition format (version 0.0.4): parsing samples and selecting them
//! with a selector written the way the series is printed.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample in `text`; comments, blank lines and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

/// The sum of the samples matching `selector`: `name` or `name{label="value",...}`. A sample
/// matches when its name is `name` and it carries every label given (it may carry more), so
/// `switchyard_messages_dropped_total{bridge="mqtt"}` adds up every reason. `None` when no
/// sample matches.
///
/// # Panics
/// When `selector` is not a valid selector (a bug in the test).
pub fn select(samples: &[Sample], selector: &str) -> Option<f64> {
    let (name, wanted) = parse_series(selector)
        .filter(|(_, rest)| rest.trim().is_empty())
        .map(|(series, _)| series)
        .unwrap_or_else(|| panic!("bad metric selector {selector:?}"));
    samples
        .iter()
        .filter(|sample| sample.name == name)
        .filter(|sample| wanted.iter().all(|(k, v)| sample.labels.get(k) == Some(v)))
        .map(|sample| sample.value)
        .reduce(|sum, value| sum + value)
}

fn parse_line(line: &str) -> Option<Sample> {
    let ((name, labels), rest) = parse_series(line)?;
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `+Inf`, `-Inf` and `NaN` are spelled as Prometheus does; Rust's parser accepts them too.
fn parse_value(text: &str) -> Option<f64> {
    text.parse().ok()
}

type Series = (String, BTreeMap<String, String>);

/// Parses `name{labels}` at the start of `text`; returns it and the rest of the text.
fn parse_series(text: &str) -> Option<(Series, &str)> {
    let text = text.trim_start();
    let name_end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    if name_end == 0 {
        return None;
    }
    let name = text[..name_end].to_owned();
    let rest = &text[name_end..];
    let Some(mut rest) = rest.strip_prefix('{') else {
        return Some(((name, BTreeMap::new()), rest));
    };
    let mut labels = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some(((name, labels), after));
        }
        let (key, after_key) = rest.split_once('=')?;
        let (value, after_value) = parse_quoted(after_key.trim_start())?;
        labels.insert(key.trim().to_owned(), value);
        rest = after_value;
    }
}

/// Parses a double-quoted label value with `\\`, `\"` and `\n` escapes.
fn parse_quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &body[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            other => value.push(other),
        }
    }
    None
}
