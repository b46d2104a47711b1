//! Files a listener re-reads on SIGHUP (certificates, users, tokens) without dropping the
//! connections it has: each holder keeps the value it was given, and the next connection
//! gets the new one.
//!
//! Every [`Reloadable`] listens for SIGHUP itself (Tokio delivers the signal to every
//! listener), independent of whatever else the hub does on SIGHUP. A file that no longer
//! loads is logged and the old value stays in use.

use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use crate::SettingError;

/// Loads a value from its files.
type Loader<T> = Box<dyn Fn() -> Result<T, SettingError> + Send + Sync>;

/// A value loaded from files, replaced when they are loaded again.
pub struct Reloadable<T> {
    /// What the value is, for the log (e.g. `bridges.firehose.tls`).
    what: String,
    /// The value in use.
    current: RwLock<Arc<T>>,
    /// Loads it again.
    load: Loader<T>,
}

impl<T> std::fmt::Debug for Reloadable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloadable")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Reloadable<T> {
    /// Loads the value a first time; the error is the configuration error to report.
    pub fn new(
        what: impl Into<String>,
        load: impl Fn() -> Result<T, SettingError> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, SettingError> {
        let value = load()?;
        Ok(Arc::new(Self {
            what: what.into(),
            current: RwLock::new(Arc::new(value)),
            load: Box::new(load),
        }))
    }

    /// The value in use now.
    pub fn get(&self) -> Arc<T> {
        // Only ever replaced whole, so a poisoned lock still holds a consistent value.
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(&current)
    }

    /// Loads the value again; keeps the old one (and says why) when that fails.
    pub fn reload(&self) -> Result<(), SettingError> {
        let value = (self.load)()?;
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Arc::new(value);
        Ok(())
    }

    /// Reloads on every SIGHUP until `shutdown`, logging the outcome.
    pub async fn reload_on_sighup(self: Arc<Self>, shutdown: CancellationToken) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(
                    "{}: cannot listen for SIGHUP ({error}); files are not reloaded.",
                    self.what
                );
                return;
            }
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = hangups.recv() => if received.is_none() { return },
            }
            match self.reload() {
                Ok(()) => tracing::info!("{}: reloaded on SIGHUP.", self.what),
                Err(error) => tracing::error!(
                    "{}: reload on SIGHUP failed, still using the previous files: {error}.",
                    self.what
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_failed_reload_keeps_the_old_value() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&calls);
        let value = Reloadable::new("test", move || {
            let call = counter.fetch_add(1, Ordering::SeqCst);
            if call == 1 {
                Err(SettingError::new("file", "broken"))
            } else {
                Ok(call)
            }
        })
        .expect("first load");
        let held = value.get();
        assert_eq!(*held, 0);
        assert_eq!(value.reload().unwrap_err().path, "file");
        assert_eq!(*value.get(), 0);
        value.reload().expect("third load");
        assert_eq!(*value.get(), 2);
        assert_eq!(*held, 0, "holders keep what they were given");
    }
}
