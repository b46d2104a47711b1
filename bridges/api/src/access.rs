//! Who a server bridge's client is, and what it may do: the login (users file, bearer
//! token, client certificate, or anonymous) and the topic ACL, shared by `mqtt-server`
//! and `websocket-server`.
//!
//! A client is identified, in this order, by the common name of a verified client
//! certificate; by a bearer token (`tokens_file`); by user name and password
//! (`users_file`). A wrong token or password is refused, whatever `allow_anonymous` says.
//! A client that gives none of these is anonymous, and refused unless `allow_anonymous`.
//! Without a `users_file` a user name is not proof of anything, so it is ignored and the
//! client is anonymous. Without an `acl`, every client may read and write every topic the
//! bridge's rules pass.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::acl::{Acl, AclRuleConfig, ReadGrant};
use crate::reload::Reloadable;
use crate::users::{Tokens, Users};
use crate::SettingError;

/// The access settings of a server bridge, as its configuration gives them.
#[derive(Debug, Clone, Copy)]
pub struct AccessSettings<'a> {
    /// The bridge's name, for the log.
    pub bridge: &'a str,
    /// `users_file` (`""` = none).
    pub users_file: &'a str,
    /// `tokens_file` (`""` = none).
    pub tokens_file: &'a str,
    /// `allow_anonymous`.
    pub allow_anonymous: bool,
    /// `acl` (`None` = everything allowed).
    pub acl: Option<&'a [AclRuleConfig]>,
}

/// What a client presented to log in.
#[derive(Default)]
pub struct Credentials {
    /// The verified client certificate's common name.
    pub certificate_user: Option<String>,
    /// A bearer token.
    pub token: Option<String>,
    /// A user name.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("certificate_user", &self.certificate_user)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    /// A wrong user name, password or token (MQTT: "bad user name or password").
    BadCredentials,
    /// No credentials, and anonymous clients are not allowed (MQTT: "not authorized").
    NotAuthorized,
}

/// The file at `path` (setting `key` of bridge `bridge`), read by `load` and read again on
/// reload; `None` when the setting is empty.
fn reloadable_file<T: Send + Sync + 'static>(
    bridge: &str,
    key: &'static str,
    path: &str,
    load: fn(&str, &str) -> Result<T, SettingError>,
) -> Result<Option<Arc<Reloadable<T>>>, SettingError> {
    if path.is_empty() {
        return Ok(None);
    }
    let path = path.to_owned();
    Reloadable::new(format!("bridges.{bridge}.{key}"), move || load(key, &path)).map(Some)
}

/// A server bridge's users, tokens, anonymous policy and ACL.
#[derive(Debug)]
pub struct AccessPolicy {
    users: Option<Arc<Reloadable<Users>>>,
    tokens: Option<Arc<Reloadable<Tokens>>>,
    allow_anonymous: bool,
    acl: Option<Acl>,
}

impl AccessPolicy {
    /// Reads the files and checks the rules.
    pub fn load(settings: AccessSettings<'_>) -> Result<Self, SettingError> {
        let bridge = settings.bridge;
        let users = reloadable_file(bridge, "users_file", settings.users_file, Users::load)?;
        let tokens = reloadable_file(bridge, "tokens_file", settings.tokens_file, Tokens::load)?;
        let acl = settings
            .acl
            .map(|rules| Acl::new("acl", rules))
            .transpose()?;
        Ok(Self {
            users,
            tokens,
            allow_anonymous: settings.allow_anonymous,
            acl,
        })
    }

    /// A policy that lets every client do everything.
    pub fn allow_all() -> Self {
        Self {
            users: None,
            tokens: None,
            allow_anonymous: true,
            acl: None,
        }
    }

    /// Whether an ACL applies (else every topic may be read and written).
    pub fn has_acl(&self) -> bool {
        self.acl.is_some()
    }

    /// The user the credentials prove (`None` = anonymous). Password checks run on
    /// Tokio's blocking pool.
    pub async fn login(
        &self,
        mut credentials: Credentials,
    ) -> Result<Option<Arc<str>>, LoginError> {
        if let Some(proven) = self.identity(&mut credentials) {
            return proven;
        }
        if let (Some(username), Some(users)) = (credentials.username, &self.users) {
            let users = users.get();
            let password = credentials.password.unwrap_or_default();
            let checked = username.clone();
            let verified = tokio::task::spawn_blocking(move || users.verify(&checked, &password))
                .await
                .unwrap_or(false);
            return if verified {
                Ok(Some(Arc::from(username)))
            } else {
                Err(LoginError::BadCredentials)
            };
        }
        self.anonymous()
    }

    /// The login by certificate or token, at once (no password is checked: a user name
    /// is ignored, as without a `users_file`).
    pub fn login_without_password(
        &self,
        mut credentials: Credentials,
    ) -> Result<Option<Arc<str>>, LoginError> {
        if let Some(proven) = self.identity(&mut credentials) {
            return proven;
        }
        self.anonymous()
    }

    /// The login a client certificate or a bearer token proves, if the client has one
    /// (taken out of `credentials`).
    fn identity(
        &self,
        credentials: &mut Credentials,
    ) -> Option<Result<Option<Arc<str>>, LoginError>> {
        if let Some(user) = credentials.certificate_user.take() {
            return Some(Ok(Some(Arc::from(user))));
        }
        let token = credentials.token.take()?;
        let Some(tokens) = &self.tokens else {
            return Some(Err(LoginError::BadCredentials));
        };
        Some(
            tokens
                .get()
                .user(&token)
                .map(Some)
                .ok_or(LoginError::BadCredentials),
        )
    }

    fn anonymous(&self) -> Result<Option<Arc<str>>, LoginError> {
        if self.allow_anonymous {
            Ok(None)
        } else {
            Err(LoginError::NotAuthorized)
        }
    }

    /// Whether `user` may publish to `topic`.
    pub fn may_write(&self, user: Option<&str>, topic: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.may_write(user, topic))
    }

    /// Whether `user` may receive a message on `topic`.
    pub fn may_read(&self, user: Option<&str>, topic: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.may_read(user, topic))
    }

    /// What a subscription of `user` to `filter` may receive.
    pub fn read_grant(&self, user: Option<&str>, filter: &str) -> ReadGrant {
        self.acl
            .as_ref()
            .map_or(ReadGrant::Whole, |acl| acl.read_grant(user, filter))
    }

    /// Reloads the users and tokens files on every SIGHUP until `shutdown`.
    pub async fn reload_on_sighup(&self, shutdown: CancellationToken) {
        let users = self
            .users
            .clone()
            .map(|users| users.reload_on_sighup(shutdown.clone()));
        let tokens = self
            .tokens
            .clone()
            .map(|tokens| tokens.reload_on_sighup(shutdown.clone()));
        tokio::join!(
            async {
                if let Some(users) = users {
                    users.await;
                }
            },
            async {
                if let Some(tokens) = tokens {
                    tokens.await;
                }
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::AclAccess;

    #[tokio::test]
    async fn logins_follow_the_documented_order() {
        let path = std::env::temp_dir().join(format!("switchyard-access-{}", std::process::id()));
        let hash = crate::users::hash_password(b"pw").unwrap();
        std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
        let rules = [AclRuleConfig {
            user: "alice".into(),
            pattern: "#".into(),
            access: AclAccess::Write,
        }];
        let policy = AccessPolicy::load(AccessSettings {
            bridge: "b",
            users_file: path.to_str().unwrap(),
            tokens_file: "",
            allow_anonymous: false,
            acl: Some(&rules),
        })
        .unwrap();
        let login = |username: Option<&str>, password: &[u8]| Credentials {
            username: username.map(str::to_owned),
            password: Some(password.to_vec()),
            ..Credentials::default()
        };
        assert_eq!(
            policy
                .login(login(Some("alice"), b"pw"))
                .await
                .unwrap()
                .as_deref(),
            Some("alice")
        );
        assert_eq!(
            policy.login(login(Some("alice"), b"no")).await,
            Err(LoginError::BadCredentials)
        );
        assert_eq!(
            policy.login(login(None, b"")).await,
            Err(LoginError::NotAuthorized)
        );
        let token = Credentials {
            token: Some("t".into()),
            ..Credentials::default()
        };
        assert_eq!(policy.login(token).await, Err(LoginError::BadCredentials));
        let certificate = Credentials {
            certificate_user: Some("bridge".into()),
            ..login(Some("alice"), b"no")
        };
        assert_eq!(
            policy.login(certificate).await.unwrap().as_deref(),
            Some("bridge")
        );
        assert!(policy.may_write(Some("alice"), "x"));
        assert!(!policy.may_write(None, "x"));
        assert!(!format!("{:?}", login(Some("alice"), b"pw")).contains("pw"));
        let _ = std::fs::remove_file(path);
    }
}
