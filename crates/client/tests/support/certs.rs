//! Certificates made in the test: a CA, node certificates naming hostnames (not IPs), client
//! certificates, and the faulty variants (another CA, expired, another name).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A directory of PEM files, removed on drop.
pub struct CertDir {
    pub dir: PathBuf,
}

impl CertDir {
    pub fn new() -> CertDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "elasticache-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        CertDir { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, pem).unwrap();
        path
    }
}

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A certificate authority that signs leaf certificates into a [`CertDir`].
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and key on disk.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Authority {
    pub fn new() -> Authority {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        // A name of its own: two CAs must not look like one to a verifier.
        let name = format!(
            "test CA {} {}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Authority { issuer }
    }

    /// Writes this CA's certificate as `name`.
    pub fn write_ca(&self, dir: &CertDir, name: &str) -> PathBuf {
        dir.write(name, &self.issuer.pem())
    }

    /// Signs a certificate for `names`; `expired` makes one that was valid in 2000 only.
    pub fn leaf(&self, dir: &CertDir, stem: &str, names: &[&str], expired: bool) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: dir.write(&format!("{stem}.pem"), &cert.pem()),
            key: dir.write(&format!("{stem}.key"), &key.serialize_pem()),
        }
    }
}

/// The memcached arguments that serve TLS with `leaf` (and require client certificates signed
/// by `client_ca`, when given).
pub fn memcached_tls_args(leaf: &Leaf, client_ca: Option<&Path>) -> Vec<String> {
    let mut options = format!(
        "ssl_chain_cert={},ssl_key={}",
        leaf.cert.display(),
        leaf.key.display()
    );
    if let Some(ca) = client_ca {
        options.push_str(&format!(",ssl_ca_cert={},ssl_verify_mode=2", ca.display()));
    }
    vec!["-Z".to_owned(), "-o".to_owned(), options]
}
