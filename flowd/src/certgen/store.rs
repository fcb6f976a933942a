//! Where certgen keeps its objects: files laid out as a mounted Secret, or
//! Secrets through the Kubernetes API.
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};

use super::CertgenError;
use super::secret::Secret;

/// The backend of a run.
pub enum Store {
    Files(FileStore),
    #[cfg(feature = "kube")]
    Kube(Box<super::kube::KubeStore>),
}

impl Store {
    /// The object `name`, None if it does not exist.
    pub async fn load(&self, name: &str) -> Result<Option<Secret>, CertgenError> {
        match self {
            Store::Files(f) => f.load(name),
            #[cfg(feature = "kube")]
            Store::Kube(k) => k.load(name).await,
        }
    }

    /// Writes `data` as object `name` (replacing `existing`, as read);
    /// `tls`: a server/client certificate (Secret type kubernetes.io/tls).
    pub async fn save(
        &mut self,
        name: &str,
        data: BTreeMap<String, Vec<u8>>,
        existing: Option<&Secret>,
        tls: bool,
    ) -> Result<(), CertgenError> {
        match self {
            Store::Files(f) => {
                let _ = (existing, tls);
                f.save(name, &data)
            }
            #[cfg(feature = "kube")]
            Store::Kube(k) => k.save(name, data, existing, tls).await,
        }
    }
}

/// One directory per object under a root, one file per key, written as
/// kubelet writes a Secret volume: the files live in a timestamped
/// directory, `..data` points at it, and each key is a symlink through
/// `..data`. An update writes a new directory and swaps `..data` with one
/// rename, so a reader sees either every old file or every new one.
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn err(path: &Path, source: std::io::Error) -> CertgenError {
        CertgenError::Write {
            path: path.display().to_string(),
            source,
        }
    }

    pub fn load(&self, name: &str) -> Result<Option<Secret>, CertgenError> {
        let dir = self.root.join(name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::err(&dir, e)),
        };
        let mut data = BTreeMap::new();
        for e in entries {
            let e = e.map_err(|e| Self::err(&dir, e))?;
            let key = e.file_name().to_string_lossy().to_string();
            if key.starts_with("..") {
                continue;
            }
            let path = e.path();
            // Follows the key's symlink through ..data.
            if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                data.insert(key, std::fs::read(&path).map_err(|e| Self::err(&path, e))?);
            }
        }
        Ok(Some(Secret {
            data,
            version: None,
        }))
    }

    pub fn save(&self, name: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<(), CertgenError> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| Self::err(&dir, e))?;
        let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
        let ts = dir.join(&stamp);
        std::fs::create_dir(&ts).map_err(|e| Self::err(&ts, e))?;
        for (key, value) in data {
            let path = ts.join(key);
            // Private keys are for the owner only.
            let mode = if key.ends_with(".key") { 0o600 } else { 0o644 };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .map_err(|e| Self::err(&path, e))?;
            f.write_all(value)
                .and_then(|()| f.sync_all())
                .map_err(|e| Self::err(&path, e))?;
        }
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&stamp, &tmp).map_err(|e| Self::err(&tmp, e))?;
        let data_link = dir.join("..data");
        std::fs::rename(&tmp, &data_link).map_err(|e| Self::err(&data_link, e))?;
        for key in data.keys() {
            let link = dir.join(key);
            match std::fs::symlink_metadata(&link) {
                Ok(m) if m.file_type().is_symlink() => continue,
                Ok(_) => std::fs::remove_file(&link).map_err(|e| Self::err(&link, e))?,
                Err(_) => {}
            }
            symlink(Path::new("..data").join(key), &link).map_err(|e| Self::err(&link, e))?;
        }
        // Keys no longer present, and the previous timestamped directories.
        let entries = std::fs::read_dir(&dir).map_err(|e| Self::err(&dir, e))?;
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            let path = e.path();
            if n == stamp || n == "..data" {
                continue;
            }
            if n.starts_with("..") {
                if path.is_dir() {
                    let _ = std::fs::remove_dir_all(&path);
                }
            } else if !data.contains_key(&n) {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(())
    }
}
