//! The registrations file (`webhooks.store`): `{"webhooks": [{"id", "channel", "url",
//! "created"}]}`, rewritten whole on every change to a temporary file beside it that is then
//! renamed over it, so a crash leaves the old file or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One registration as the file keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Saved {
    pub id: String,
    pub channel: String,
    pub url: String,
    pub created: u64,
}

#[derive(Serialize, Deserialize)]
struct File {
    webhooks: Vec<Saved>,
}

/// The store file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("webhooks.store {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// The file is not a registrations file.
    #[error("webhooks.store {path}: not a webhook registrations file: {error}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said.
        error: serde_json::Error,
    },
}

/// The registrations in `path`; none when the file does not exist yet.
pub(super) fn load(path: &Path) -> Result<Vec<Saved>, StoreError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                error,
            })
        }
    };
    let file: File = serde_json::from_slice(&text).map_err(|error| StoreError::Invalid {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(file.webhooks)
}

/// Writes `saved` to `path` through a temporary file and a rename.
pub(super) fn save(path: &Path, saved: &[Saved]) -> Result<(), StoreError> {
    let io = |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let body = serde_json::to_vec_pretty(&File {
        webhooks: saved.to_vec(),
    })
    .expect("registrations serialize");
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&body).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_names_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hooks.json");
        assert!(load(&path).unwrap().is_empty());
        let one = Saved {
            id: "a1".into(),
            channel: "news".into(),
            url: "https://example.com/hook".into(),
            created: 7,
        };
        save(&path, std::slice::from_ref(&one)).unwrap();
        let back = load(&path).unwrap();
        assert_eq!((back[0].id.as_str(), back[0].url.as_str()), ("a1", "https://example.com/hook"));
        std::fs::write(&path, "{\"hooks\": []}").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("webhooks.store {}: not a webhook registrations file: missing field `webhooks`", path.display())),
            "{err}"
        );
    }
}
