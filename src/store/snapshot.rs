//! A consistent copy of the data folder while the daemon runs (`modelwatch snapshot`). It runs
//! on the committer thread, so no batch is applied meanwhile (ingest waits; nothing is
//! refused): a checkpoint cuts every head into chunks and flushes sled, then the folder is
//! copied with retention held off. The copy opens as a data folder of its own: point
//! `storage.data_dir` at it (or copy it back) with the daemon stopped.
//!
//! Files that other parts of the daemon replace atomically (alert state, notification log and
//! queue) are copied as they are at that moment; one that disappears during the copy (a
//! delivered notification) is left out.
use super::wal::Wal;
use super::{lock, Store, StoreError};
use std::path::{Path, PathBuf};

/// Where snapshots go by default: `<data_dir>/snapshots/<UTC time>`.
pub const SNAPSHOTS: &str = "snapshots";

#[derive(Debug, Default)]
pub struct SnapshotReport {
    pub path: PathBuf,
    pub files: u64,
    pub bytes: u64,
}

impl Store {
    /// Checkpoints, then copies the folder to `dest` (which must not exist yet).
    pub fn snapshot(&self, wal: &mut Wal, dest: &Path) -> Result<SnapshotReport, StoreError> {
        let io = |what: &str, p: &Path, e: std::io::Error| StoreError::Snapshot(format!("{what} {}: {e}", p.display()));
        if dest.exists() {
            return Err(StoreError::Snapshot(format!("{} exists already", dest.display())));
        }
        let src = self.dir.canonicalize().map_err(|e| io("cannot resolve", &self.dir, e))?;
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| io("cannot create", parent, e))?;
        let parent = parent.canonicalize().map_err(|e| io("cannot resolve", parent, e))?;
        if parent.starts_with(&src) && !parent.starts_with(src.join(SNAPSHOTS)) {
            return Err(StoreError::Snapshot(format!(
                "{} is inside the data folder; use its {SNAPSHOTS}/ folder or a path outside it",
                dest.display()
            )));
        }
        self.checkpoint(wal, true)?;
        let _maintenance = lock(&self.maintenance);
        let tmp = dest.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        let mut rep = SnapshotReport { path: dest.to_path_buf(), ..Default::default() };
        copy_tree(&src, &tmp, &src, &mut rep).map_err(|e| io("copying into", &tmp, e))?;
        super::wal::sync_dir(&tmp).map_err(|e| io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, dest).map_err(|e| io("renaming to", dest, e))?;
        super::wal::sync_dir(&parent).map_err(|e| io("syncing", &parent, e))?;
        Ok(rep)
    }
}

/// Copies `from` into `to`, leaving out the folder lock and the snapshots folder; each file is
/// fsynced.
fn copy_tree(from: &Path, to: &Path, root: &Path, rep: &mut SnapshotReport) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        if from == root && (entry.file_name() == SNAPSHOTS || entry.file_name() == super::recover::LOCK_FILE) {
            continue;
        }
        let target = to.join(entry.file_name());
        let ty = match entry.file_type() {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if ty.is_dir() {
            copy_tree(&path, &target, root, rep)?;
        } else if ty.is_file() {
            match std::fs::copy(&path, &target) {
                Ok(n) => {
                    std::fs::File::open(&target)?.sync_all()?;
                    rep.files += 1;
                    rep.bytes += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
