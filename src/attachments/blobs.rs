//! The blob store: declaration documents as content-addressed files under
//! `storage.attachments_dir` (`sha256/ab/cd/<full hex>`). A sender-chosen
//! name never becomes a path, so `../../etc/passwd` is just a label. Files
//! are 0600 and folders 0700, written to a temporary file in the target
//! folder and renamed into place, so a crash leaves either the whole file or
//! none. Identical documents are stored once. Knows nothing of cases or the
//! database.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{AttachmentError, Result, io};

/// A file in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha256: String,
    pub size: u64,
    pub path: PathBuf,
    /// False when an identical document was already stored.
    pub fresh: bool,
}

/// The content-addressed file store under `storage.attachments_dir`.
#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    pub fn new(root: impl Into<PathBuf>) -> Blobs {
        Blobs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/sha256/ab/cd/<hex>` for a full lower- or upper-case hex SHA-256.
    pub(crate) fn path_of(&self, sha256: &str) -> Result<PathBuf> {
        let hex = normalize_hash(sha256)?;
        if hex.len() != 64 {
            return Err(AttachmentError::InvalidHash(sha256.to_string()));
        }
        Ok(self
            .root
            .join("sha256")
            .join(&hex[..2])
            .join(&hex[2..4])
            .join(&hex))
    }

    /// Stores `bytes` (once per content) and says where.
    pub fn put(&self, bytes: &[u8]) -> Result<Stored> {
        let sha256 = crate::hash::sha256_hex(bytes);
        let path = self.path_of(&sha256)?;
        let size = bytes.len() as u64;
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        create_private_dirs(&self.root, &dir)?;
        // Same name, same content: a file whose bytes hash to its name is the
        // document. Anything else (damaged on disk) is replaced.
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && meta.is_file()
            && meta.len() == size
            && std::fs::read(&path).is_ok_and(|on_disk| crate::hash::sha256_hex(&on_disk) == sha256)
        {
            if meta.permissions().mode() & 0o777 != 0o600 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io("set permissions on", &path))?;
            }
            return Ok(Stored {
                sha256,
                size,
                path,
                fresh: false,
            });
        }
        write_atomically(&dir, &path, bytes)?;
        Ok(Stored {
            sha256,
            size,
            path,
            fresh: true,
        })
    }

    /// A file written piece by piece (a large message fetched in chunks) and
    /// named by its hash once complete ([`BlobWriter::finish`]): its content
    /// never needs to be in memory whole.
    pub(crate) fn writer(&self) -> Result<BlobWriter> {
        create_private_dirs(&self.root, &self.root)?;
        let tmp = temporary_name(&self.root);
        let file = create_private_file(&tmp)?;
        Ok(BlobWriter {
            blobs: self.clone(),
            file: Some(std::io::BufWriter::with_capacity(256 * 1024, file)),
            tmp,
            hasher: Sha256::new(),
            size: 0,
            head: Vec::new(),
        })
    }

    /// The file of `bytes` when it is already in the store with the right
    /// size (written moments ago by [`super::store_before_commit`]); no write, no
    /// sync, no re-read. `None` means [`Blobs::put`] must write it.
    pub(crate) fn find_stored(&self, bytes: &[u8]) -> Option<Stored> {
        self.find(&crate::hash::sha256_hex(bytes), bytes.len() as u64)
            .ok()
    }

    /// The file of `sha256` with `size` bytes, written earlier (by a
    /// [`BlobWriter`], or by [`Blobs::put`] before the transaction); not
    /// re-read. Missing, the register would name a missing file.
    pub(crate) fn find(&self, sha256: &str, size: u64) -> Result<Stored> {
        let path = self.path_of(sha256)?;
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() == size => Ok(Stored {
                sha256: sha256.to_string(),
                size,
                path,
                fresh: false,
            }),
            _ => Err(AttachmentError::NotFound(sha256.to_string())),
        }
    }

    /// The stored bytes, checked against their hash.
    pub fn get(&self, sha256: &str) -> Result<Vec<u8>> {
        let path = self.path_of(sha256)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AttachmentError::NotFound(sha256.to_string()));
            }
            Err(e) => return Err(io("read", &path)(e)),
        };
        if crate::hash::sha256_hex(&bytes) != normalize_hash(sha256)? {
            return Err(AttachmentError::Corrupt {
                sha256: sha256.to_string(),
                path,
            });
        }
        Ok(bytes)
    }

    /// Writes the stored document to `out` (mode 0600: it is personal data),
    /// replacing the file atomically. Returns the size.
    pub fn export(&self, sha256: &str, out: &Path) -> Result<u64> {
        let bytes = self.get(sha256)?;
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        write_atomically(&dir, out, &bytes)?;
        Ok(bytes.len() as u64)
    }
}

/// How many leading bytes a [`BlobWriter`] keeps: enough for
/// the type sniff of the register.
pub(crate) const HEAD_BYTES: usize = 64;

/// A blob being written: hashed as it goes, fsynced and renamed to its
/// hash's name by [`BlobWriter::finish`]. Dropped unfinished, it removes its
/// temporary file.
#[derive(Debug)]
pub(crate) struct BlobWriter {
    blobs: Blobs,
    file: Option<std::io::BufWriter<File>>,
    tmp: PathBuf,
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
}

impl BlobWriter {
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(bytes).map_err(io("write", &self.tmp))?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        Ok(())
    }

    /// Syncs the file and renames it into place under its hash (an
    /// identical file already there is kept). Returns it and its first bytes.
    pub(crate) fn finish(mut self) -> Result<(Stored, Vec<u8>)> {
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let file = self.file.take().map(std::io::BufWriter::into_inner);
        let file = match file {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(io("write", &self.tmp)(e.into_error())),
            None => return Err(io("write", &self.tmp)(std::io::ErrorKind::Other.into())),
        };
        file.sync_all().map_err(io("sync", &self.tmp))?;
        drop(file);
        let path = self.blobs.path_of(&sha256)?;
        let dir = path.parent().unwrap_or(self.blobs.root()).to_owned();
        create_private_dirs(self.blobs.root(), &dir)?;
        let fresh =
            !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == self.size);
        rename_into_place(&self.tmp, &path, &dir)?;
        let stored = Stored {
            sha256,
            size: self.size,
            path,
            fresh,
        };
        Ok((stored, std::mem::take(&mut self.head)))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Unfinished, or renamed already (then there is nothing to remove).
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Lower-case hex, or an error for anything else.
pub(super) fn normalize_hash(s: &str) -> Result<String> {
    let hex = s.trim().to_ascii_lowercase();
    if hex.is_empty() || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AttachmentError::InvalidHash(s.to_string()));
    }
    Ok(hex)
}

/// Creates `dir` and the folders between `root` and it with mode 0700.
fn create_private_dirs(root: &Path, dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create the folder", dir))?;
    // The umask can only take bits away; make sure of 0700 on what is ours.
    let mut at = dir;
    while at.starts_with(root) {
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o700))
            .map_err(io("set permissions on", at))?;
        match at.parent() {
            Some(p) if at != root => at = p,
            _ => break,
        }
    }
    Ok(())
}

/// A temporary file in `dir` (0600, created exclusively), synced, renamed to
/// `path`, then the folder synced so the rename survives a crash.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_name(dir);
    let result = (|| {
        let mut file = create_private_file(&tmp)?;
        file.write_all(bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        drop(file);
        rename_into_place(&tmp, path, dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A fresh temporary file name in `dir`, which the sweep never takes for a
/// stored file (its name is no hash).
fn temporary_name(dir: &Path) -> PathBuf {
    dir.join(format!(".tmp-{:016x}", rand::random::<u64>()))
}

/// Creates `path` exclusively, mode 0600 (its content is personal data).
fn create_private_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))
}

/// Renames the synced `tmp` to `path`, then syncs the folder `dir` so the
/// rename survives a crash.
fn rename_into_place(tmp: &Path, path: &Path, dir: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(io("rename into place", path))?;
    if let Ok(d) = File::open(dir) {
        // Not every file system can sync a folder; the data is synced.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn stores_content_addressed_private_and_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("attachments");
        let blobs = Blobs::new(&root);
        let pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n";
        let a = blobs.put(pdf).unwrap();
        let sha = crate::hash::sha256_hex(pdf);
        assert_eq!(a.sha256, sha);
        assert!(a.fresh);
        assert_eq!(
            a.path,
            root.join("sha256")
                .join(&sha[..2])
                .join(&sha[2..4])
                .join(&sha)
        );
        assert_eq!(std::fs::read(&a.path).unwrap(), pdf);
        assert_eq!(mode(&a.path), 0o600);
        for dir in [
            root.clone(),
            root.join("sha256"),
            root.join("sha256").join(&sha[..2]),
            a.path.parent().unwrap().to_owned(),
        ] {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
        let b = blobs.put(pdf).unwrap();
        assert!(!b.fresh, "identical content is stored once");
        assert_eq!(b.path, a.path);
        let entries: Vec<_> = std::fs::read_dir(a.path.parent().unwrap())
            .unwrap()
            .collect();
        assert_eq!(entries.len(), 1, "no temporary files left behind");
        assert_eq!(blobs.get(&sha.to_uppercase()).unwrap(), pdf);
    }

    #[test]
    fn export_writes_identical_bytes_private() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(tmp.path().join("a"));
        let bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let s = blobs.put(&bytes).unwrap();
        let out = tmp.path().join("out.bin");
        std::fs::write(&out, b"old").unwrap();
        assert_eq!(blobs.export(&s.sha256, &out).unwrap(), 10_000);
        assert_eq!(std::fs::read(&out).unwrap(), bytes);
        assert_eq!(mode(&out), 0o600);
    }

    #[test]
    fn damaged_files_are_replaced_on_put_and_refused_on_get() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(tmp.path());
        let s = blobs.put(b"hello declaration").unwrap();
        std::fs::write(&s.path, b"HELLO declaration").unwrap();
        assert!(matches!(
            blobs.get(&s.sha256),
            Err(AttachmentError::Corrupt { .. })
        ));
        std::fs::write(&s.path, b"short").unwrap();
        assert!(blobs.put(b"hello declaration").unwrap().fresh);
        assert_eq!(blobs.get(&s.sha256).unwrap(), b"hello declaration");
    }

    #[test]
    fn a_blob_written_in_pieces_is_named_by_its_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("attachments");
        let blobs = Blobs::new(&root);
        let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        let mut w = blobs.writer().unwrap();
        for piece in bytes.chunks(4096) {
            w.write(piece).unwrap();
        }
        let (stored, head) = w.finish().unwrap();
        assert_eq!(stored.sha256, crate::hash::sha256_hex(&bytes));
        assert_eq!(stored.size, 300_000);
        assert!(stored.fresh);
        assert_eq!(head, bytes[..HEAD_BYTES]);
        assert_eq!(blobs.get(&stored.sha256).unwrap(), bytes);
        assert_eq!(mode(&stored.path), 0o600);
        // The same content again is the same file; an abandoned writer
        // leaves nothing behind.
        let mut again = blobs.writer().unwrap();
        again.write(&bytes).unwrap();
        assert!(!again.finish().unwrap().0.fresh);
        let mut abandoned = blobs.writer().unwrap();
        abandoned.write(b"half").unwrap();
        drop(abandoned);
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn hashes_are_checked() {
        let blobs = Blobs::new("/nonexistent");
        for bad in ["", "../../etc/passwd", "zz", &"a".repeat(65), "abc/def"] {
            assert!(
                matches!(blobs.path_of(bad), Err(AttachmentError::InvalidHash(_))),
                "{bad:?}"
            );
        }
        assert!(blobs.path_of(&"a".repeat(63)).is_err());
        assert!(matches!(
            blobs.get(&"ab".repeat(32)),
            Err(AttachmentError::NotFound(_))
        ));
    }
}
