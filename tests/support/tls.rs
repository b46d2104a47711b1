//! Certificates for TLS tests, made by the `openssl` command in a test directory: a CA,
//! a server certificate for 127.0.0.1 and localhost, a client certificate, and an
//! unrelated CA.

use std::process::Command;
use std::time::Duration;

use super::process::{require_command, run_with_timeout, TestDir};

/// How long one `openssl` invocation may take.
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(30);

/// X.509 extensions for the certificates below (RFC 5280 section 4.2): a CA that may sign,
/// a server certificate naming 127.0.0.1 and localhost, and a client certificate.
const OPENSSL_CONFIG: &str = "\
[req]
distinguished_name = subject

[subject]

[ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid

[client]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
";

/// PEM files made for one test (absolute paths).
pub struct Certificates {
    /// The CA that signed the server and client certificates.
    pub ca: String,
    /// The server certificate.
    pub server_cert: String,
    /// The server certificate's key.
    pub server_key: String,
    /// The client certificate.
    pub client_cert: String,
    /// The client certificate's key.
    pub client_key: String,
    /// A CA that signed nothing here.
    pub other_ca: String,
    /// Holds the files.
    _dir: TestDir,
}

impl Certificates {
    /// Runs `openssl` in a fresh directory (file names are relative to it, so a temporary
    /// directory with spaces in its path does not matter).
    pub fn generate() -> Certificates {
        let dir = TestDir::new("tls");
        dir.write("openssl.cnf", OPENSSL_CONFIG);
        let openssl = |arguments: &str| {
            let output = run_with_timeout(
                Command::new(require_command("openssl"))
                    .current_dir(dir.path())
                    .args(arguments.split_whitespace()),
                OPENSSL_TIMEOUT,
            );
            assert!(
                output.status.success(),
                "openssl {arguments} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        for ca in ["ca", "other-ca"] {
            openssl(&format!(
                "req -x509 -config openssl.cnf -extensions ca {new_key} -days 2 \
                 -subj /CN=switchyard-test-{ca} -keyout {ca}.key -out {ca}.pem"
            ));
        }
        for (serial, leaf, common_name) in [(1, "server", "localhost"), (2, "client", "bridge")] {
            openssl(&format!(
                "req -new -config openssl.cnf {new_key} -subj /CN={common_name} \
                 -keyout {leaf}.key -out {leaf}.csr"
            ));
            openssl(&format!(
                "x509 -req -in {leaf}.csr -days 2 -CA ca.pem -CAkey ca.key -set_serial {serial} \
                 -extfile openssl.cnf -extensions {leaf} -out {leaf}.pem"
            ));
        }
        let path = |name: &str| dir.path().join(name).display().to_string();
        Certificates {
            ca: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
            other_ca: path("other-ca.pem"),
            _dir: dir,
        }
    }
}
