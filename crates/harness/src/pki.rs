//! Test certificates: a CA, a server certificate for `127.0.0.1` and `localhost` and a client
//! certificate signed by it, and a second, unrelated CA with its own client certificate for the
//! tests that must be refused. Generated afresh (rcgen, on `ring`) into a temporary directory
//! that disappears with the [`TestPki`].

use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::HarnessError;

/// The names the server certificate is valid for: what the harness's servers listen on.
const SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A certificate authority, its certificates and keys as PEM files in a temporary directory.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
}

/// What a TLS server of the harness needs: its certificate and key, the CA that signs client
/// certificates, and whether it requires one. The probe connects with [`TestPki`]'s client
/// certificate, so a server that verifies clients can still be probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The CA certificate (PEM) that signed the server and client certificates.
    pub ca_file: PathBuf,
    /// The server certificate (PEM).
    pub cert_file: PathBuf,
    /// The server certificate's key (PEM).
    pub key_file: PathBuf,
    /// A client certificate the readiness probe presents (PEM).
    pub client_cert_file: PathBuf,
    /// Its key (PEM).
    pub client_key_file: PathBuf,
    /// Refuse clients that present no certificate signed by `ca_file`.
    pub verify_clients: bool,
}

impl TestPki {
    /// Generates both CAs and the certificates and writes them out.
    pub fn generate() -> Result<TestPki, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-pki-")
            .tempdir()?;
        let ca = new_ca("Switchyard test CA")?;
        write_issued(dir.path(), "ca", &ca, "server", &leaf(&SERVER_NAMES, true)?)?;
        write_issued(dir.path(), "ca", &ca, "client", &leaf(&[], false)?)?;
        let other = new_ca("Unrelated test CA")?;
        write_issued(
            dir.path(),
            "other-ca",
            &other,
            "other-client",
            &leaf(&[], false)?,
        )?;
        Ok(TestPki { dir })
    }

    /// The CA certificate that signed the server and client certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.file("ca.pem")
    }

    /// The server certificate (SANs `127.0.0.1` and `localhost`).
    pub fn server_cert_file(&self) -> PathBuf {
        self.file("server.pem")
    }

    /// The server certificate's private key.
    pub fn server_key_file(&self) -> PathBuf {
        self.file("server-key.pem")
    }

    /// A client certificate signed by [`TestPki::ca_file`].
    pub fn client_cert_file(&self) -> PathBuf {
        self.file("client.pem")
    }

    /// The client certificate's private key.
    pub fn client_key_file(&self) -> PathBuf {
        self.file("client-key.pem")
    }

    /// A second CA that signed nothing the servers use: trusting it must fail.
    pub fn other_ca_file(&self) -> PathBuf {
        self.file("other-ca.pem")
    }

    /// A client certificate signed by the other CA: a server verifying clients must refuse it.
    pub fn other_client_cert_file(&self) -> PathBuf {
        self.file("other-client.pem")
    }

    /// The other client certificate's private key.
    pub fn other_client_key_file(&self) -> PathBuf {
        self.file("other-client-key.pem")
    }

    /// The files a harness server needs to serve TLS with these certificates.
    pub fn server_tls(&self, verify_clients: bool) -> ServerTls {
        ServerTls {
            ca_file: self.ca_file(),
            cert_file: self.server_cert_file(),
            key_file: self.server_key_file(),
            client_cert_file: self.client_cert_file(),
            client_key_file: self.client_key_file(),
            verify_clients,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A self-signed CA and its issuer (parameters and key), which signs the leaves.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Result<Ca, HarnessError> {
    let key = KeyPair::generate().map_err(pki_error)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki_error)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).map_err(pki_error)?.pem();
    Ok(Ca {
        pem,
        issuer: Issuer::new(params, key),
    })
}

/// Parameters of a leaf certificate: a server's (for `names`) or a client's.
fn leaf(names: &[&str], server: bool) -> Result<CertificateParams, HarnessError> {
    let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(sans).map_err(pki_error)?;
    let (name, usage) = if server {
        (
            "switchyard test server",
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    } else {
        (
            "switchyard test client",
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    };
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    Ok(params)
}

/// Writes `<ca_name>.pem` and the leaf `<name>.pem` / `<name>-key.pem` signed by `ca`.
fn write_issued(
    dir: &Path,
    ca_name: &str,
    ca: &Ca,
    name: &str,
    params: &CertificateParams,
) -> Result<(), HarnessError> {
    let key = KeyPair::generate().map_err(pki_error)?;
    let cert = params.signed_by(&key, &ca.issuer).map_err(pki_error)?;
    std::fs::write(dir.join(format!("{ca_name}.pem")), &ca.pem)?;
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem())?;
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem())?;
    Ok(())
}

fn pki_error(e: rcgen::Error) -> HarnessError {
    HarnessError::Io(io::Error::other(format!(
        "generating test certificates: {e}"
    )))
}
