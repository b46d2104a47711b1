//! Certificates for TLS tests, made by the `openssl` command in a test directory: a CA,
//! a server certificate for 127.0.0.1 and localhost, a client certificate, and an
//! unrelated CA; on request, more server certificates (other serials, or expired).

use std::process::Command;
use std::time::Duration;

use super::process::{require_command, run_with_timeout, TestDir};

/// `tls = { ... }` with the given keys and values (file paths, `server_name`), for a
/// bridge's TOML table.
pub fn tls_setting(pairs: &[(&str, &str)]) -> String {
    let keys: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{key} = \"{value}\""))
        .collect();
    format!("tls = {{ {} }}", keys.join(", "))
}

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

# `openssl ca`, used only for certificates with explicit validity dates.
[ca_section]
database = index.txt
new_certs_dir = .
serial = serial.txt
default_md = sha256
policy = any_name
unique_subject = no

[any_name]
commonName = supplied
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
    dir: TestDir,
}

impl Certificates {
    /// Runs `openssl` in a fresh directory (file names are relative to it, so a temporary
    /// directory with spaces in its path does not matter).
    pub fn generate() -> Certificates {
        let dir = TestDir::new("tls");
        dir.write("openssl.cnf", OPENSSL_CONFIG);
        let openssl = |arguments: &str| openssl(&dir, arguments);
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
            dir,
        }
    }

    /// A new server certificate (127.0.0.1, localhost) with `serial`, signed by the CA:
    /// `(cert, key)` paths named after `label`.
    pub fn issue_server(&self, label: &str, serial: u32) -> (String, String) {
        openssl(
            &self.dir,
            &format!(
                "req -new -config openssl.cnf -newkey ec -pkeyopt ec_paramgen_curve:prime256v1                  -nodes -subj /CN=localhost -keyout {label}.key -out {label}.csr"
            ),
        );
        openssl(
            &self.dir,
            &format!(
                "x509 -req -in {label}.csr -days 2 -CA ca.pem -CAkey ca.key -set_serial {serial}                  -extfile openssl.cnf -extensions server -out {label}.pem"
            ),
        );
        (
            self.path(&format!("{label}.pem")),
            self.path(&format!("{label}.key")),
        )
    }

    /// A server certificate signed by the CA that expired in 2020: `(cert, key)`.
    pub fn issue_expired_server(&self) -> (String, String) {
        self.dir.write("index.txt", "");
        self.dir.write("serial.txt", "70\n");
        openssl(
            &self.dir,
            "req -new -config openssl.cnf -newkey ec -pkeyopt ec_paramgen_curve:prime256v1              -nodes -subj /CN=localhost -keyout expired.key -out expired.csr",
        );
        openssl(
            &self.dir,
            "ca -batch -config openssl.cnf -name ca_section -cert ca.pem -keyfile ca.key              -startdate 20200101000000Z -enddate 20200102000000Z -extfile openssl.cnf              -extensions server -notext -in expired.csr -out expired.pem",
        );
        (self.path("expired.pem"), self.path("expired.key"))
    }

    /// The absolute path of a file in the certificates' directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// Runs `openssl ARGUMENTS` in `dir`, asserting success.
fn openssl(dir: &TestDir, arguments: &str) {
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
}

/// The serial number of the certificate the TLS server at `port` on 127.0.0.1 presents,
/// as `openssl s_client | openssl x509 -serial` prints it (`serial=03`).
pub fn served_serial(port: u16) -> String {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -serial"
    );
    let output = run_with_timeout(Command::new("sh").args(["-c", &script]), OPENSSL_TIMEOUT);
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
