//! One daemon per database: `run` and `run --once` hold an exclusive lease,
//! a `flock` on a lock file next to the database. Two instances on one
//! database would send every pending mail twice (issue 12). The kernel drops
//! the lock when the holder exits, however it exits, so a crashed daemon
//! never leaves a stale lease behind. The file holds the holder's pid, for
//! the refusal message only; the lock, not the file's presence, is the lease.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Why the lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LeaseError {
    #[error(
        "another privacy-mailroom ({holder}) is running on {database} and holds {lock}; only one `run` or `run --once` may use a database at a time: stop it first (e.g. `systemctl stop privacy-mailroom`) or let it finish"
    )]
    Held {
        database: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error(
        "cannot open the lock file {path}: {source}; check that the directory of storage.database is writable by this user"
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The held lease; dropping it (or exiting) releases it.
#[derive(Debug)]
pub(crate) struct Lease {
    _file: File,
}

impl Lease {
    /// The lock file: the database's path with `.lock` appended.
    pub(crate) fn path_for(database: &Path) -> PathBuf {
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lease for `database` without waiting, or says who holds it.
    pub fn acquire(database: &Path) -> Result<Lease, LeaseError> {
        let path = Lease::path_for(database);
        let open_err = |source| LeaseError::Open {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(open_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "pid unknown".to_string(),
                };
                return Err(LeaseError::Held {
                    database: database.to_owned(),
                    lock: path,
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(open_err(e)),
        }
        file.set_len(0).map_err(open_err)?;
        file.seek(SeekFrom::Start(0)).map_err(open_err)?;
        writeln!(file, "{}", std::process::id()).map_err(open_err)?;
        file.flush().map_err(open_err)?;
        Ok(Lease { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("mailroom.db");
        let first = Lease::acquire(&db).unwrap();
        assert!(dir.path().join("mailroom.db.lock").exists());
        let err = Lease::acquire(&db).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let _again = Lease::acquire(&db).unwrap();
        let text = std::fs::read_to_string(Lease::path_for(&db)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
    }
}
