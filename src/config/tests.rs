//! Loading: merge order, defaults, and errors that name the file and key path.

use std::path::PathBuf;

use super::load;

/// Writes `text` to a fresh file named after the test.
fn file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn the_embedded_default_loads() {
    let (settings, _) = load(&[]).expect("the embedded default is valid");
    assert_eq!(settings.admin.listen, "127.0.0.1:9090");
    assert!(settings.bridges.contains_key("mqtt"));
    assert!(settings.bridges.contains_key("firehose"));
}

#[test]
fn later_files_override_earlier_ones() {
    let base = file("base.toml", "[hub]\nname = \"a\"\nmax_hops = 2\n");
    let site = file("site.toml", "[hub]\nname = \"b\"\n");
    let (settings, _) = load(&[base, site]).expect("valid");
    assert_eq!(settings.hub.name, "b");
    assert_eq!(settings.hub.max_hops, 2);
    assert!(
        settings.bridges.is_empty(),
        "files replace the embedded default"
    );
}

#[test]
fn unknown_keys_name_the_file_and_path() {
    let bad = file("typo.toml", "[hub]\nnmae = \"x\"\n");
    let error = load(std::slice::from_ref(&bad)).unwrap_err();
    assert_eq!(error.path, "hub.nmae");
    assert!(error.message.contains("unknown field `nmae`"), "{error}");
    assert_eq!(
        error.origin.as_deref(),
        Some(bad.display().to_string().as_str())
    );
}

#[test]
fn bad_values_say_what_was_expected() {
    let bad = file("duration.toml", "[hub]\nshutdown_timeout = \"soon\"\n");
    let error = load(&[bad]).unwrap_err();
    assert_eq!(error.path, "hub.shutdown_timeout");
    assert!(error.message.contains("expected a duration"), "{error}");
}

#[test]
fn syntax_errors_name_the_file() {
    let bad = file("syntax.toml", "[hub\nname = 1\n");
    let error = load(std::slice::from_ref(&bad)).unwrap_err();
    assert!(error.to_string().contains("syntax.toml"), "{error}");
}

#[test]
fn a_missing_file_is_an_error() {
    let error = load(&[PathBuf::from("/nonexistent/switchyard.toml")]).unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/switchyard.toml"),
        "{error}"
    );
}
