//! HTTPS: the `tlslisten` listener, its certificate, and taking up a new
//! certificate without a restart.
//!
//! A TLS connection is accepted, its handshake done by rustls (the `ring`
//! provider, the one reqwest already builds), then it is served exactly as a
//! plain one (see [`serve::serve_connection`]): same routes, HTTP/1.1 or
//! HTTP/2 as the client's ALPN says. The handshake must finish within
//! `headertimeout`, as a plain client must send its headers: a client that
//! connects and never finishes it is closed.
//!
//! The certificate and key (`tlscert`, `tlskey`, PEM) are held by
//! [`Certificates`], which every handshake asks for the current pair. Their
//! directories are watched (a Kubernetes Secret, as written by
//! cert-manager, is updated by a symlink swap, as a ConfigMap is): a new
//! pair that loads and matches replaces the old one for new connections,
//! while connections already open keep the session they have. A pair that
//! does not load, or whose key is not the certificate's, is refused with a
//! `tls-reload-failed` log line naming the file and the reason, and the old
//! pair keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::front::serve::{self, Listener};
use crate::proxy::Proxy;

/// How long to wait for more file events before loading (a Secret update
/// and an editor's save are several events).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Where the certificate and its key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a certificate and key cannot be used; names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tlscert {0}: cannot read: {1}")]
    ReadCert(PathBuf, std::io::Error),
    #[error("tlskey {0}: cannot read: {1}")]
    ReadKey(PathBuf, std::io::Error),
    #[error("tlscert {0}: no PEM certificate in it ({1})")]
    NoCert(PathBuf, String),
    #[error("tlskey {0}: no PEM private key in it ({1})")]
    NoKey(PathBuf, String),
    #[error("tlskey {0}: unusable private key: {1}")]
    BadKey(PathBuf, rustls::Error),
    #[error("tlskey {key}: not the key of the certificate in tlscert {cert}: {error}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        error: rustls::Error,
    },
}

impl CertificateFiles {
    /// The files of `config`, relative to the directory of the config file
    /// `config_path`; `None` without `tlslisten`.
    pub fn of(config: &Config, config_path: &Path) -> Option<CertificateFiles> {
        if config.tlslisten.is_empty() {
            return None;
        }
        let base = match config_path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        Some(CertificateFiles {
            cert: base.join(&config.tlscert),
            key: base.join(&config.tlskey),
        })
    }

    /// Reads both files and checks that the key is the certificate's.
    pub fn load(&self) -> Result<Loaded, TlsError> {
        let cert_pem =
            std::fs::read(&self.cert).map_err(|e| TlsError::ReadCert(self.cert.clone(), e))?;
        let key_pem =
            std::fs::read(&self.key).map_err(|e| TlsError::ReadKey(self.key.clone(), e))?;
        let digest: [u8; 32] = Sha256::new()
            .chain_update(&cert_pem)
            .chain_update(&key_pem)
            .finalize()
            .into();
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::NoCert(self.cert.clone(), e.to_string()))?;
        if chain.is_empty() {
            return Err(TlsError::NoCert(
                self.cert.clone(),
                "no CERTIFICATE section".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| TlsError::NoKey(self.key.clone(), e.to_string()))?;
        let signing_key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::BadKey(self.key.clone(), e))?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified.keys_match().map_err(|error| TlsError::Mismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            error,
        })?;
        Ok(Loaded {
            key: Arc::new(certified),
            digest,
        })
    }

    /// The directories to watch: a Secret swaps a symlink in its directory.
    fn directories(&self) -> Vec<PathBuf> {
        let mut directories = Vec::new();
        for file in [&self.cert, &self.key] {
            let directory = match file.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !directories.contains(&directory) {
                directories.push(directory);
            }
        }
        directories
    }
}

/// A certificate and key that loaded and match.
pub struct Loaded {
    key: Arc<CertifiedKey>,
    /// SHA-256 of both files, so that an event that changed neither is a
    /// no-op.
    digest: [u8; 32],
}

/// The pair in force; asked by every handshake.
#[derive(Debug)]
pub struct Certificates {
    files: CertificateFiles,
    current: RwLock<Arc<CertifiedKey>>,
    digest: Mutex<[u8; 32]>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap()))
    }
}

impl Certificates {
    /// Loads the pair; an error names the file and the reason.
    pub fn load(files: CertificateFiles) -> Result<Arc<Certificates>, TlsError> {
        let loaded = files.load()?;
        Ok(Arc::new(Certificates {
            files,
            current: RwLock::new(loaded.key),
            digest: Mutex::new(loaded.digest),
        }))
    }

    /// Reads the files again; takes the pair up if it changed and is good.
    /// Returns whether a new pair is in force.
    pub fn reload(&self) -> bool {
        match self.files.load() {
            Ok(loaded) => {
                let mut digest = self.digest.lock().unwrap();
                if *digest == loaded.digest {
                    return false;
                }
                *self.current.write().unwrap() = loaded.key;
                *digest = loaded.digest;
                info!(event = "tls-reload", cert = %self.files.cert.display(), "new certificate in force for new connections");
                true
            }
            Err(e) => {
                error!(event = "tls-reload-failed", error = %e, "certificate refused: the previous one keeps serving");
                false
            }
        }
    }

    /// The TLS settings of the listener: this pair, HTTP/2 and HTTP/1.1 by
    /// ALPN.
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Watches the certificate's and key's directories and reloads on change,
/// until the task is dropped.
pub async fn watch(certificates: Arc<Certificates>) {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.try_send(());
        }
    });
    // Kept alive for as long as this task runs.
    let _watcher = match watcher {
        Ok(mut watcher) => {
            for directory in certificates.files.directories() {
                if let Err(error) = watcher.watch(&directory, RecursiveMode::NonRecursive) {
                    warn!(event = "error", path = %directory.display(), error = %error, "cannot watch the certificate: it will not be reloaded");
                }
            }
            watcher
        }
        Err(error) => {
            warn!(event = "error", error = %error, "cannot watch the certificate: it will not be reloaded");
            return;
        }
    };
    while rx.recv().await.is_some() {
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        certificates.reload();
    }
}

/// The HTTPS listener.
pub struct TlsListener {
    pub listener: TcpListener,
    pub acceptor: TlsAcceptor,
}

impl TlsListener {
    /// Accepts connections until the task is aborted; serves what `role`
    /// says, as the plain listener does.
    pub async fn serve(self, proxy: Arc<Proxy>, role: Listener) {
        loop {
            let (socket, peer) = serve::accept(&self.listener).await;
            let header_timeout = Duration::from_secs(proxy.current().config.headertimeout);
            let acceptor = self.acceptor.clone();
            let proxy = Arc::clone(&proxy);
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(header_timeout, acceptor.accept(socket))
                    .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        debug!(event = "tls-handshake-failed", client = %peer, error = %error);
                        return;
                    }
                    Err(_) => {
                        debug!(event = "connection-silent", client = %peer, "closed: TLS handshake not done within headertimeout");
                        return;
                    }
                };
                let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                serve::serve_connection(stream, peer, proxy, role, header_timeout, http2).await;
            });
        }
    }
}
