//! A certificate folder laid out as Pushpin's `runner/certs/`: `<servername>.crt` with its
//! `<servername>.key`, `_.example.com.crt` for every name one label under `example.com`, and
//! `default_<port>.crt` for a listener's connections that match no other.
//!
//! The folder is read whole into a map from file stem to key pair, swapped in one piece, so a
//! handshake always sees one state of the folder. [`CertDir::reload`] keeps, for a file that is
//! now bad, the pair it had before: a half-written or broken replacement never takes a name's
//! certificate away.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

use super::{load_key_pair, TlsError};

/// Key pairs by lower-cased file stem (`example.com`, `_.example.com`, `default_443`).
type Pairs = HashMap<String, Arc<CertifiedKey>>;

/// The certificates of a `runner/certs/`-style folder.
#[derive(Debug)]
pub struct CertDir {
    path: PathBuf,
    provider: Arc<CryptoProvider>,
    pairs: RwLock<Arc<Pairs>>,
}

impl CertDir {
    /// Reads every `<stem>.crt` of `path` with its `<stem>.key`; the first bad file is an error.
    pub fn load(path: &Path, provider: Arc<CryptoProvider>) -> Result<CertDir, TlsError> {
        let mut pairs = Pairs::new();
        for (stem, crt) in crt_files(path)? {
            let pair = load_key_pair(&crt, &crt.with_extension("key"), &provider)?;
            pairs.insert(stem, Arc::new(pair));
        }
        Ok(CertDir {
            path: path.to_path_buf(),
            provider,
            pairs: RwLock::new(Arc::new(pairs)),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many names have a certificate.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Whether no name has a certificate.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the folder again. A file that cannot be used is left out of the new state, its
    /// name keeping the pair it had, and its error is returned for the log; a removed file's
    /// name is gone. Connections already open are not touched.
    pub fn reload(&self) -> Result<Vec<TlsError>, TlsError> {
        let old = self.current();
        let mut pairs = Pairs::new();
        let mut rejected = Vec::new();
        for (stem, crt) in crt_files(&self.path)? {
            match load_key_pair(&crt, &crt.with_extension("key"), &self.provider) {
                Ok(pair) => {
                    pairs.insert(stem, Arc::new(pair));
                }
                Err(e) => {
                    if let Some(pair) = old.get(&stem) {
                        pairs.insert(stem, pair.clone());
                    }
                    rejected.push(e);
                }
            }
        }
        *self.pairs.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pairs);
        Ok(rejected)
    }

    /// The pair for a handshake on listener `port` that asked for `server_name`: the name's
    /// own, else its wildcard (one label), else the listener's `default_<port>`.
    pub fn pick(&self, server_name: Option<&str>, port: u16) -> Option<Arc<CertifiedKey>> {
        let pairs = self.current();
        if let Some(name) = server_name.map(str::to_ascii_lowercase) {
            if let Some(pair) = pairs.get(&name) {
                return Some(pair.clone());
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(pair) = pairs.get(&format!("_.{parent}")) {
                    return Some(pair.clone());
                }
            }
        }
        pairs.get(&format!("default_{port}")).cloned()
    }

    fn current(&self) -> Arc<Pairs> {
        self.pairs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Every `*.crt` file of `dir`, with its lower-cased stem.
fn crt_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, TlsError> {
    let read_dir = |source| TlsError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir)? {
        let path = entry.map_err(read_dir)?.path();
        if path.extension().is_some_and(|e| e == "crt") && path.is_file() {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                files.push((stem.to_ascii_lowercase(), path));
            }
        }
    }
    files.sort();
    Ok(files)
}
