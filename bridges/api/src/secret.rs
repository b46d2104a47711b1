//! Passwords in configuration: given inline (`password`) or read from a file
//! (`password_file`, the way container platforms mount secrets), and never shown by
//! `Debug`, so a settings struct can be logged or printed without leaking them.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::settings::SettingError;

/// A secret string; `Debug` prints `"***"`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("\"***\"")
    }
}

/// The password of a bridge: `password`, or the contents of `password_file` without its
/// final line break; giving both is an error (which one would win is not obvious).
pub fn resolve_password(
    inline: Option<Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, SettingError> {
    let Some(file) = file else {
        return Ok(inline);
    };
    if inline.is_some() {
        return Err(SettingError::new(
            "password_file",
            "expected either password or password_file, found both",
        ));
    }
    let contents = std::fs::read_to_string(file).map_err(|error| {
        SettingError::new(
            "password_file",
            format!("cannot read {}: {error}", file.display()),
        )
    })?;
    let password = contents
        .strip_suffix('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .unwrap_or(&contents);
    Ok(Some(Secret::new(password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "\"***\"");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(\"***\")");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn a_password_file_loses_only_its_final_line_break() {
        let dir = std::env::temp_dir().join(format!("switchyard-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("password");
        std::fs::write(&file, "s3cret \r\n").expect("write");
        let found = resolve_password(None, Some(&file)).expect("readable");
        assert_eq!(found.as_ref().map(Secret::expose), Some("s3cret "));
        assert_eq!(
            resolve_password(Some(Secret::new("inline")), None).expect("inline"),
            Some(Secret::new("inline"))
        );
        let both = resolve_password(Some(Secret::new("inline")), Some(&file));
        assert_eq!(both.expect_err("both").path, "password_file");
        let missing = resolve_password(None, Some(&dir.join("absent"))).expect_err("missing");
        assert!(missing.message.contains("cannot read"), "{missing}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
