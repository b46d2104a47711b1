//! Who is connected: one entry per client identifier, which enforces `max_connections`
//! and MQTT's session takeover (a second connection with the same client identifier makes
//! the server close the first; MQTT 3.1.1 section 3.1.4, MQTT 5 section 3.1.4).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use switchyard_api::server::ConnectionId;
use tokio_util::sync::CancellationToken;

/// What [`ConnectedClients::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// The client may proceed.
    Admitted,
    /// The client may proceed; an older connection with its identifier was told to close.
    TookOver,
    /// `max_connections` clients are connected already.
    Full,
}

#[derive(Debug)]
struct Entry {
    /// The connection that holds the identifier now.
    connection: ConnectionId,
    /// Cancelled to make that connection close.
    taken_over: CancellationToken,
}

/// The connected clients of one `mqtt-server` bridge, by client identifier.
#[derive(Debug)]
pub struct ConnectedClients {
    entries: Mutex<HashMap<String, Entry>>,
    max_connections: usize,
}

impl ConnectedClients {
    /// No clients; at most `max_connections` at once.
    pub fn new(max_connections: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max_connections,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Each critical section is a single map operation, so poisoning is harmless.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `connection` as the holder of `client_id`; `taken_over` is cancelled when a
    /// later connection claims the same identifier. A takeover does not count against the
    /// limit: the old connection is on its way out.
    pub fn admit(
        &self,
        client_id: &str,
        connection: ConnectionId,
        taken_over: CancellationToken,
    ) -> Admission {
        let mut entries = self.lock();
        let entry = Entry {
            connection,
            taken_over,
        };
        if let Some(old) = entries.get_mut(client_id) {
            let old = std::mem::replace(old, entry);
            old.taken_over.cancel();
            return Admission::TookOver;
        }
        if entries.len() >= self.max_connections {
            return Admission::Full;
        }
        entries.insert(client_id.to_owned(), entry);
        Admission::Admitted
    }

    /// `connection` closed: frees `client_id` unless a newer connection holds it.
    pub fn leave(&self, client_id: &str, connection: ConnectionId) {
        let mut entries = self.lock();
        if entries
            .get(client_id)
            .is_some_and(|entry| entry.connection == connection)
        {
            entries.remove(client_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_connection_takes_the_identifier_over() {
        let clients = ConnectedClients::new(10);
        let first = CancellationToken::new();
        assert_eq!(
            clients.admit("bad/id", 1, first.clone()),
            Admission::Admitted
        );
        let second = CancellationToken::new();
        assert_eq!(
            clients.admit("bad/id", 2, second.clone()),
            Admission::TookOver
        );
        assert!(first.is_cancelled());
        clients.leave("bad/id", 1);
        assert_eq!(clients.lock().len(), 1, "the newer holder stays");
        clients.leave("bad/id", 2);
        assert!(clients.lock().is_empty());
        assert!(!second.is_cancelled());
    }

    #[test]
    fn the_limit_refuses_new_identifiers_only() {
        let clients = ConnectedClients::new(1);
        assert_eq!(
            clients.admit("a", 1, CancellationToken::new()),
            Admission::Admitted
        );
        assert_eq!(
            clients.admit("b", 2, CancellationToken::new()),
            Admission::Full
        );
        assert_eq!(
            clients.admit("a", 3, CancellationToken::new()),
            Admission::TookOver
        );
        clients.leave("a", 3);
        assert_eq!(
            clients.admit("b", 4, CancellationToken::new()),
            Admission::Admitted
        );
    }
}
