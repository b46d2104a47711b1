//! Credential files of server bridges: `users_file` (passwords) and `tokens_file`
//! (WebSocket bearer tokens).
//!
//! A users file has one `user:hash` line per user, like Mosquitto's password file, but the
//! hash is an Argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) written by
//! `switchyard passwd FILE USER`; Mosquitto's own `$6$`/`$7$` hashes are refused with a
//! message saying so. A tokens file has one `user:token` line per token (a user may have
//! several). Blank lines and lines starting with `#` are ignored in both.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::SettingError;

/// Successful logins remembered (so a reconnecting client does not cost another Argon2
/// run); the cache is emptied when it reaches this size, and whenever the file is reloaded.
const LOGIN_CACHE_ENTRIES: usize = 4096;

/// The users of a `users_file`.
pub struct Users {
    /// User name -> PHC hash string.
    hashes: HashMap<String, String>,
    /// User name -> keyed hash (SipHash with a random per-process key) of a password
    /// that verified; never the password itself.
    verified: Mutex<HashMap<String, u64>>,
    /// The key of those hashes.
    cache_key: RandomState,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.hashes.len())
            .finish_non_exhaustive()
    }
}

impl Users {
    /// Reads and checks a users file (`key` names the setting, for errors).
    pub fn load(key: &str, path: &str) -> Result<Self, SettingError> {
        let text = read(key, path)?;
        let mut hashes = HashMap::new();
        for (number, line) in entries(&text) {
            let at = || format!("{path} line {number}");
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| SettingError::new(key, format!("{}: expected user:hash", at())))?;
            if user.is_empty() {
                return Err(SettingError::new(key, format!("{}: empty user name", at())));
            }
            if let Err(error) = PasswordHash::new(hash) {
                let hint = if hash.starts_with("$6$") || hash.starts_with("$7$") {
                    " (a Mosquitto hash: write the file with `switchyard passwd`)"
                } else {
                    ""
                };
                return Err(SettingError::new(
                    key,
                    format!(
                        "{}: expected an Argon2 PHC hash for {user:?}: {error}{hint}",
                        at()
                    ),
                ));
            }
            hashes.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Self {
            hashes,
            verified: Mutex::new(HashMap::new()),
            cache_key: RandomState::new(),
        })
    }

    /// Whether `password` is `user`'s. Slow (Argon2) unless remembered: call it off the
    /// async runtime (`spawn_blocking`).
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let Some(hash) = self.hashes.get(user) else {
            return false;
        };
        let fingerprint = self.cache_key.hash_one(password);
        if self.cached().get(user) == Some(&fingerprint) {
            return true;
        }
        let verified = PasswordHash::new(hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok());
        if verified {
            let mut cache = self.cached();
            if cache.len() >= LOGIN_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(user.to_owned(), fingerprint);
        }
        verified
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The tokens of a `tokens_file`: token -> user.
pub struct Tokens {
    users: HashMap<String, Arc<str>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Reads and checks a tokens file (`key` names the setting, for errors).
    pub fn load(key: &str, path: &str) -> Result<Self, SettingError> {
        let text = read(key, path)?;
        let mut users = HashMap::new();
        for (number, line) in entries(&text) {
            match line.split_once(':') {
                Some((user, token)) if !user.is_empty() && !token.is_empty() => {
                    users.insert(token.to_owned(), Arc::from(user));
                }
                _ => {
                    return Err(SettingError::new(
                        key,
                        format!("{path} line {number}: expected user:token"),
                    ))
                }
            }
        }
        Ok(Self { users })
    }

    /// The user a token belongs to.
    pub fn user(&self, token: &str) -> Option<Arc<str>> {
        self.users.get(token).cloned()
    }
}

/// An Argon2id PHC hash of `password` with a fresh random salt.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| error.to_string())
}

/// A users file's text with `user`'s line replaced (or added) by `user:hash`, or removed
/// when `hash` is `None`; other lines are kept as they are. Also says whether `user` was
/// in the file.
pub fn edit_users_file(text: &str, user: &str, hash: Option<&str>) -> (String, bool) {
    let mut found = false;
    let mut out = String::with_capacity(text.len() + 128);
    for line in text.lines() {
        let is_user = line.split_once(':').is_some_and(|(name, _)| name == user);
        if is_user {
            if let (Some(hash), false) = (hash, found) {
                out.push_str(&format!("{user}:{hash}\n"));
            }
            found = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let (Some(hash), false) = (hash, found) {
        out.push_str(&format!("{user}:{hash}\n"));
    }
    (out, found)
}

fn read(key: &str, path: &str) -> Result<String, SettingError> {
    std::fs::read_to_string(path)
        .map_err(|error| SettingError::new(key, format!("cannot read {path}: {error}")))
}

/// The meaningful lines of a file, with their 1-based numbers.
fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim_end_matches('\r')))
        .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> String {
        let path = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn hashed_passwords_verify_and_others_do_not() {
        let hash = hash_password(b"s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let (text, found) = edit_users_file("# users\n", "alice", Some(&hash));
        assert!(!found);
        let path = file("users", &text);
        let users = Users::load("users_file", &path).unwrap();
        assert!(users.verify("alice", b"s3cret"));
        assert!(users.verify("alice", b"s3cret"), "remembered");
        assert!(!users.verify("alice", b"wrong"));
        assert!(!users.verify("bob", b"s3cret"));
        assert!(!format!("{users:?}").contains("argon2"), "no hash in Debug");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn edits_replace_add_and_delete_one_user() {
        let text = "alice:old\nbob:b\n";
        assert_eq!(
            edit_users_file(text, "alice", Some("new")),
            ("alice:new\nbob:b\n".to_owned(), true)
        );
        assert_eq!(
            edit_users_file(text, "carol", Some("c")).0,
            "alice:old\nbob:b\ncarol:c\n"
        );
        assert_eq!(
            edit_users_file(text, "alice", None),
            ("bob:b\n".to_owned(), true)
        );
        assert!(!edit_users_file(text, "dave", None).1);
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let path = file("bad-users", "alice:$7$101$abc\n");
        let error = Users::load("users_file", &path).unwrap_err();
        assert_eq!(error.path, "users_file");
        assert!(
            error.message.contains("line 1") && error.message.contains("Mosquitto"),
            "{error}"
        );
        let path2 = file("tokens", "# t\nalice:abc\nbroken\n");
        let error = Tokens::load("tokens_file", &path2).unwrap_err();
        assert!(error.message.contains("line 3"), "{error}");
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(path2);
    }

    #[test]
    fn tokens_name_their_user() {
        let path = file("tokens-ok", "alice:t1\nalice:t2\nbob:t3\n");
        let tokens = Tokens::load("tokens_file", &path).unwrap();
        assert_eq!(tokens.user("t2").as_deref(), Some("alice"));
        assert_eq!(tokens.user("t3").as_deref(), Some("bob"));
        assert!(tokens.user("nope").is_none());
        let _ = std::fs::remove_file(path);
    }
}
