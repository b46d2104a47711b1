//! This process among several replicas sharing one configuration: the part of default
//! client ids and consumer names that keeps replicas apart.

/// `<hostname>-<pid>`: the host name is the pod name in Kubernetes (and the container id
/// under Docker), and the process id tells apart processes on one host. In a container the
/// hub is PID 1, so the id is the same across restarts of the container in its pod.
pub fn instance_id() -> String {
    let host: String = gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    let host = if host.is_empty() { "host" } else { &host };
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::instance_id;

    #[test]
    fn names_host_and_process() {
        let id = instance_id();
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
        assert!(id.len() > 2 + std::process::id().to_string().len(), "{id}");
    }
}
