//! A private CA and certificates it signed, made with `openssl` for a test: what a `rediss://`
//! Redis needs, and what a client verifying it is given.

use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files in one directory: the CA, a server certificate for `127.0.0.1` (SAN IP) and a
/// client certificate, each with its key.
#[derive(Clone, Debug)]
pub struct Certificates {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Certificates {
    /// Makes them in `dir` (created if missing) with `/usr/bin/openssl`.
    pub fn make(dir: &Path) -> Certificates {
        std::fs::create_dir_all(dir).expect("a directory for the certificates");
        let ca_key = dir.join("ca.key");
        let certificates = Certificates {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        };
        openssl(&[
            "req".as_ref(),
            "-x509".as_ref(),
            "-newkey".as_ref(),
            "rsa:2048".as_ref(),
            "-nodes".as_ref(),
            "-keyout".as_ref(),
            ca_key.as_os_str(),
            "-out".as_ref(),
            certificates.ca.as_os_str(),
            "-days".as_ref(),
            "2".as_ref(),
            "-subj".as_ref(),
            "/CN=realtime test CA".as_ref(),
        ]);
        sign(
            dir,
            &certificates,
            &ca_key,
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1",
        );
        sign(
            dir,
            &certificates,
            &ca_key,
            "client",
            "/CN=realtime test client",
            "extendedKeyUsage=clientAuth",
        );
        certificates
    }
}

/// `<name>.key` and `<name>.pem` signed by the CA, with `extensions` (which also make it an
/// X.509 v3 certificate: rustls refuses v1).
fn sign(
    dir: &Path,
    certificates: &Certificates,
    ca_key: &Path,
    name: &str,
    subject: &str,
    extensions: &str,
) {
    let extensions_file = dir.join(format!("{name}.ext"));
    std::fs::write(&extensions_file, format!("{extensions}\n")).expect("write the extensions");
    let key = dir.join(format!("{name}.key"));
    let request = dir.join(format!("{name}.csr"));
    let cert = dir.join(format!("{name}.pem"));
    openssl(&[
        "req".as_ref(),
        "-newkey".as_ref(),
        "rsa:2048".as_ref(),
        "-nodes".as_ref(),
        "-keyout".as_ref(),
        key.as_os_str(),
        "-out".as_ref(),
        request.as_os_str(),
        "-subj".as_ref(),
        subject.as_ref(),
    ]);
    openssl(&[
        "x509".as_ref(),
        "-req".as_ref(),
        "-in".as_ref(),
        request.as_os_str(),
        "-CA".as_ref(),
        certificates.ca.as_os_str(),
        "-CAkey".as_ref(),
        ca_key.as_os_str(),
        "-CAcreateserial".as_ref(),
        "-out".as_ref(),
        cert.as_os_str(),
        "-days".as_ref(),
        "2".as_ref(),
        "-extfile".as_ref(),
        extensions_file.as_os_str(),
    ]);
}

fn openssl(args: &[&std::ffi::OsStr]) {
    let output = Command::new("/usr/bin/openssl")
        .args(args)
        .output()
        .expect("/usr/bin/openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
