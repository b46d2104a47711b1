//! `switchyard passwd FILE USER`: writes a users file, as `mosquitto_passwd` does, with
//! Argon2id hashes (see `switchyard_api::users`). The password comes from `-b PASSWORD`,
//! from a prompt without echo (asked twice) when standard input is a terminal, or from
//! the first line of standard input otherwise. The file is created with mode 0600.

use std::io::{BufRead, IsTerminal};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use switchyard_api::users::{edit_users_file, hash_password};

/// The arguments of `switchyard passwd`.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// The users file (created when missing).
    pub file: PathBuf,
    /// The user to add, change or delete.
    pub user: String,
    /// Take the password from the command line (visible to other local users in the
    /// process list: prefer the prompt or standard input).
    #[arg(short = 'b', value_name = "PASSWORD", conflicts_with = "delete")]
    pub password: Option<String>,
    /// Delete the user.
    #[arg(short = 'D')]
    pub delete: bool,
}

/// Runs the subcommand.
pub fn passwd(args: &PasswdArgs) -> anyhow::Result<()> {
    if args.user.is_empty() || args.user.contains(':') {
        bail!("a user name must be non-empty and must not contain ':'");
    }
    let file = &args.file;
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", file.display())),
    };
    let hash = if args.delete {
        None
    } else {
        let password = read_password(args.password.as_deref())?;
        Some(hash_password(password.as_bytes()).map_err(anyhow::Error::msg)?)
    };
    let (edited, found) = edit_users_file(&text, &args.user, hash.as_deref());
    if args.delete && !found {
        bail!("user {:?} is not in {}", args.user, file.display());
    }
    write_private(file, &edited)
}

/// The password: given, prompted for twice, or the first line of standard input.
fn read_password(given: Option<&str>) -> anyhow::Result<String> {
    if let Some(password) = given {
        return Ok(password.to_owned());
    }
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let again =
            rpassword::prompt_password("Reenter password: ").context("cannot read the password")?;
        if first != again {
            bail!("the passwords do not match");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

/// Replaces `file` with `text`, readable by its owner only.
fn write_private(file: &PathBuf, text: &str) -> anyhow::Result<()> {
    let temporary = file.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&temporary, file)
    };
    write().with_context(|| format!("cannot write {}", file.display()))
}
