//! Certificates for clusters that speak TLS: a throwaway CA, a server certificate it signed, and
//! an unrelated CA that signed nothing (to prove a client refuses a server it should not trust).

use std::path::{Path, PathBuf};

use crate::Error;

/// What a TLS cluster's server certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The names the server certificate is valid for (DNS names, or IP addresses such as
    /// `127.0.0.1`). The cluster's [`url`](crate::Cluster::url) connects to the first one.
    pub server_names: Vec<String>,
}

impl Default for TlsOptions {
    /// Only `localhost`: connecting to `127.0.0.1` then reaches the same server under a name the
    /// certificate does not hold, which is what host name verification must catch.
    fn default() -> Self {
        TlsOptions {
            server_names: vec!["localhost".to_string()],
        }
    }
}

/// The files of a TLS cluster's certificates.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    ca: PathBuf,
    other_ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    server_names: Vec<String>,
}

impl ClusterTls {
    /// The PEM file of the CA that signed the server's certificate: what `sslrootcert=` names.
    pub fn ca_path(&self) -> &Path {
        &self.ca
    }

    /// The PEM file of a CA that signed nothing this server presents: verification against it
    /// must fail.
    pub fn wrong_ca_path(&self) -> &Path {
        &self.other_ca
    }

    /// The names in the server's certificate.
    pub fn server_names(&self) -> &[String] {
        &self.server_names
    }
}

#[cfg(feature = "tls")]
pub(crate) fn generate(dir: &Path, options: &TlsOptions) -> Result<ClusterTls, Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    let failed = |e: rcgen::Error| Error::Command {
        step: "generating the cluster's TLS certificates",
        detail: e.to_string(),
    };
    let ca = |name: &str| -> Result<(String, Issuer<'static, KeyPair>), rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), Issuer::new(params, key)))
    };
    let (ca_pem, issuer) = ca("localpg throwaway CA").map_err(failed)?;
    let (other_ca_pem, _) = ca("localpg unrelated CA").map_err(failed)?;

    let mut server = CertificateParams::new(options.server_names.clone()).map_err(failed)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localpg server");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().map_err(failed)?;
    let server_cert = server.signed_by(&server_key, &issuer).map_err(failed)?;

    let tls = ClusterTls {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        server_names: options.server_names.clone(),
    };
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(Error::io("writing the cluster's TLS certificates"))
    };
    write(&tls.ca, &ca_pem)?;
    write(&tls.other_ca, &other_ca_pem)?;
    write(&tls.cert, &server_cert.pem())?;
    write_private(&tls.key, &server_key.serialize_pem())?;
    Ok(tls)
}

#[cfg(not(feature = "tls"))]
pub(crate) fn generate(_dir: &Path, _options: &TlsOptions) -> Result<ClusterTls, Error> {
    Err(Error::Setting {
        name: "tls",
        detail: "this build of localpg has no TLS support; enable its `tls` feature".into(),
    })
}

/// The server refuses a key file that others can read.
#[cfg(feature = "tls")]
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io("writing the server's TLS key"))?;
    file.write_all(text.as_bytes())
        .map_err(Error::io("writing the server's TLS key"))
}
