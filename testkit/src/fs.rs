//! The fake disk: an in-memory file system with the POSIX crash model.
//!
//! Why a model this strict: the core's atomic write (temp file, `sync`, `rename`,
//! `sync_dir`) is only proven when leaving out any one step loses data in a test. So
//! the disk keeps two versions of everything, what the running process sees and what
//! a crash leaves:
//!
//! - A file is an inode. `write` replaces its data (the same inode, as `O_TRUNC` does);
//!   the data becomes durable only when the file is `sync`ed.
//! - A name is a directory entry pointing at an inode. Creating, renaming and removing
//!   a name changes only the visible entries; they become durable when the parent
//!   directory is `sync_dir`ed.
//! - [`MemFs::crash`] rebuilds the visible tree from the durable entries, each pointing
//!   at its inode's durable data. A file written and synced whose directory was never
//!   synced vanishes; a name that was synced over data that was not comes back empty
//!   (or with the data of its last sync).
//! - Directories are durable when created (a simplification: POSIX also wants the
//!   parent synced; the runner creates its state tree once). Writing into a missing
//!   directory fails with `NotFound`, as on a real disk.
//! - [`MemFs::set_full`] makes every write fail with ENOSPC, touching nothing.
//!
//! Every durable operation goes through the shared [`CrashPoints`], so a test can stop
//! the process at any one of them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use steadfast_core::env::FileSystem;

use crate::crash::CrashPoints;

/// The raw OS error of a full disk.
pub const ENOSPC: i32 = 28;

type Ino = u64;

#[derive(Debug, Default)]
struct Inode {
    /// What the process reads.
    data: Vec<u8>,
    /// What survives a crash: the data of the last `sync`.
    durable: Vec<u8>,
    /// Entries pointing here, visible and durable together; 0 frees the inode.
    links: u32,
}

#[derive(Debug, Default)]
struct Dir {
    /// Entries the process sees.
    visible: BTreeMap<OsString, Ino>,
    /// Entries as of the last `sync_dir`.
    durable: BTreeMap<OsString, Ino>,
}

#[derive(Debug, Default)]
struct Disk {
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

/// The directory a path's entry lives in (`.` for a bare name) and the entry's name.
fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_os_string()))
}

impl Disk {
    fn new() -> Self {
        let mut disk = Self::default();
        for root in ["/", "."] {
            disk.dirs.insert(PathBuf::from(root), Dir::default());
        }
        disk
    }

    fn dir_mut(&mut self, dir: &Path, path: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(|| not_found(path))
    }

    fn lookup(&self, path: &Path) -> io::Result<Ino> {
        let (dir, name) = split(path)?;
        self.dirs
            .get(&dir)
            .and_then(|d| d.visible.get(&name))
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn inode(&mut self, ino: Ino) -> &mut Inode {
        self.inodes.entry(ino).or_default()
    }

    fn unlink(&mut self, ino: Ino) {
        let inode = self.inode(ino);
        inode.links = inode.links.saturating_sub(1);
        if inode.links == 0 {
            self.inodes.remove(&ino);
        }
    }

    fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let existing = self.dir_mut(&dir, path)?.visible.get(&name).copied();
        let ino = match existing {
            Some(ino) => ino,
            None => {
                self.next_ino += 1;
                let ino = self.next_ino;
                self.dir_mut(&dir, path)?.visible.insert(name, ino);
                self.inode(ino).links = 1;
                ino
            }
        };
        self.inode(ino).data = data.to_vec();
        Ok(())
    }

    fn sync(&mut self, path: &Path) -> io::Result<()> {
        let ino = self.lookup(path)?;
        let inode = self.inode(ino);
        inode.durable.clone_from(&inode.data);
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let ino = self.lookup(from)?;
        let (to_dir, to_name) = split(to)?;
        if !self.dirs.contains_key(&to_dir) {
            return Err(not_found(to));
        }
        if from == to {
            return Ok(());
        }
        let (from_dir, from_name) = split(from)?;
        self.dir_mut(&from_dir, from)?.visible.remove(&from_name);
        if let Some(replaced) = self.dir_mut(&to_dir, to)?.visible.insert(to_name, ino) {
            self.unlink(replaced);
        }
        Ok(())
    }

    fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
        let dir = self.dirs.get_mut(path).ok_or_else(|| not_found(path))?;
        let old = std::mem::replace(&mut dir.durable, dir.visible.clone());
        let new: Vec<Ino> = dir.durable.values().copied().collect();
        for ino in new {
            self.inode(ino).links += 1;
        }
        for ino in old.into_values() {
            self.unlink(ino);
        }
        Ok(())
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let removed = self
            .dirs
            .get_mut(&dir)
            .and_then(|d| d.visible.remove(&name));
        if let Some(ino) = removed {
            self.unlink(ino);
        }
        Ok(())
    }

    fn create_dir_all(&mut self, path: &Path) {
        for dir in path.ancestors().filter(|p| !p.as_os_str().is_empty()) {
            self.dirs.entry(dir.to_path_buf()).or_default();
        }
    }

    /// The visible tree becomes the durable one; unreachable inodes are freed.
    fn crash(&mut self) {
        for inode in self.inodes.values_mut() {
            inode.data.clone_from(&inode.durable);
            inode.links = 0;
        }
        for dir in self.dirs.values_mut() {
            dir.visible.clone_from(&dir.durable);
        }
        let links: Vec<Ino> = self
            .dirs
            .values()
            .flat_map(|d| d.visible.values().chain(d.durable.values()))
            .copied()
            .collect();
        for ino in links {
            self.inode(ino).links += 1;
        }
        self.inodes.retain(|_, inode| inode.links > 0);
    }
}

/// The in-memory disk with the POSIX crash model (see the module doc). Cheap to clone;
/// clones share the disk, its full switch and its crash points.
#[derive(Debug, Clone)]
pub struct MemFs {
    disk: Arc<Mutex<Disk>>,
    full: Arc<AtomicBool>,
    points: Arc<CrashPoints>,
}

impl Default for MemFs {
    fn default() -> Self {
        Self::with_crash_points(CrashPoints::new())
    }
}

impl MemFs {
    /// An empty disk (only `/` and `.` exist) counting its durable operations in
    /// `points`, which other fakes may share.
    pub fn with_crash_points(points: Arc<CrashPoints>) -> Self {
        Self {
            disk: Arc::new(Mutex::new(Disk::new())),
            full: Arc::default(),
            points,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The crash points this disk counts into.
    pub fn crash_points(&self) -> &Arc<CrashPoints> {
        &self.points
    }

    /// Makes every write fail with ENOSPC (or stop failing).
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// Whether writes fail with ENOSPC.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::SeqCst)
    }

    /// Power loss: keeps only durable names pointing at durable data (see the module
    /// doc). Call it when the process that used the disk is gone.
    pub fn crash(&self) {
        self.lock().crash();
    }

    /// The contents of a file as the process sees them.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let disk = self.lock();
        let ino = disk.lookup(path).ok()?;
        disk.inodes.get(&ino).map(|i| i.data.clone())
    }

    /// The paths of all visible files, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        let disk = self.lock();
        disk.dirs
            .iter()
            .flat_map(|(dir, d)| d.visible.keys().map(move |name| dir.join(name)))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

impl FileSystem for MemFs {
    async fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.contents(path).ok_or_else(|| not_found(path))
    }

    async fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.points
            .point("fs.write", || {
                if self.is_full() {
                    return Err(io::Error::from_raw_os_error(ENOSPC));
                }
                self.lock().write(path, data)
            })
            .await
    }

    async fn sync(&self, path: &Path) -> io::Result<()> {
        self.points
            .point("fs.sync", || self.lock().sync(path))
            .await
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.points
            .point("fs.rename", || self.lock().rename(from, to))
            .await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.points
            .point("fs.sync_dir", || self.lock().sync_dir(path))
            .await
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.points
            .point("fs.remove", || self.lock().remove(path))
            .await
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.lock().create_dir_all(path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    async fn disk() -> MemFs {
        let fs = MemFs::default();
        fs.create_dir_all(p("/d")).await.unwrap();
        fs
    }

    #[tokio::test]
    async fn an_unsynced_write_vanishes() {
        let fs = disk().await;
        fs.write(p("/d/a"), b"1").await.unwrap();
        assert_eq!(fs.read(p("/d/a")).await.unwrap(), b"1");
        fs.crash();
        assert_eq!(
            fs.read(p("/d/a")).await.unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn synced_data_without_a_synced_name_vanishes() {
        let fs = disk().await;
        fs.write(p("/d/a"), b"1").await.unwrap();
        fs.sync(p("/d/a")).await.unwrap();
        fs.crash();
        assert!(fs.contents(p("/d/a")).is_none());
    }

    #[tokio::test]
    async fn a_synced_name_over_unsynced_data_comes_back_empty_or_older() {
        let fs = disk().await;
        fs.write(p("/d/a"), b"1").await.unwrap();
        fs.sync_dir(p("/d")).await.unwrap();
        fs.crash();
        assert_eq!(
            fs.contents(p("/d/a")),
            Some(Vec::new()),
            "name kept, data lost"
        );
        fs.write(p("/d/a"), b"2").await.unwrap();
        fs.sync(p("/d/a")).await.unwrap();
        fs.write(p("/d/a"), b"3").await.unwrap();
        fs.crash();
        assert_eq!(
            fs.contents(p("/d/a")),
            Some(b"2".to_vec()),
            "last synced data"
        );
    }

    #[tokio::test]
    async fn a_rename_is_durable_only_after_sync_dir() {
        let fs = disk().await;
        fs.write(p("/d/a"), b"old").await.unwrap();
        fs.sync(p("/d/a")).await.unwrap();
        fs.sync_dir(p("/d")).await.unwrap();
        fs.write(p("/d/a.tmp"), b"new").await.unwrap();
        fs.sync(p("/d/a.tmp")).await.unwrap();
        fs.rename(p("/d/a.tmp"), p("/d/a")).await.unwrap();
        assert_eq!(fs.paths(), [PathBuf::from("/d/a")]);
        fs.crash();
        assert_eq!(fs.contents(p("/d/a")), Some(b"old".to_vec()));
        assert!(fs.contents(p("/d/a.tmp")).is_none());
        fs.write(p("/d/a.tmp"), b"new").await.unwrap();
        fs.sync(p("/d/a.tmp")).await.unwrap();
        fs.rename(p("/d/a.tmp"), p("/d/a")).await.unwrap();
        fs.sync_dir(p("/d")).await.unwrap();
        fs.crash();
        assert_eq!(fs.contents(p("/d/a")), Some(b"new".to_vec()));
        assert_eq!(fs.lock().inodes.len(), 1, "the replaced inode was freed");
    }

    #[tokio::test]
    async fn a_remove_is_durable_only_after_sync_dir() {
        let fs = disk().await;
        fs.write(p("/d/a"), b"1").await.unwrap();
        fs.sync(p("/d/a")).await.unwrap();
        fs.sync_dir(p("/d")).await.unwrap();
        fs.remove(p("/d/a")).await.unwrap();
        fs.remove(p("/d/missing")).await.unwrap();
        fs.crash();
        assert_eq!(fs.contents(p("/d/a")), Some(b"1".to_vec()));
        fs.remove(p("/d/a")).await.unwrap();
        fs.sync_dir(p("/d")).await.unwrap();
        fs.crash();
        assert!(fs.paths().is_empty());
        assert!(fs.lock().inodes.is_empty(), "nothing leaks");
    }

    #[tokio::test]
    async fn missing_directories_and_a_full_disk_fail_like_a_real_one() {
        let fs = disk().await;
        let missing = fs.write(p("/nowhere/a"), b"1").await.unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            fs.sync_dir(p("/nowhere")).await.unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        fs.write(p("/d/a"), b"1").await.unwrap();
        fs.set_full(true);
        let full = fs.write(p("/d/a"), b"2").await.unwrap_err();
        assert_eq!(full.raw_os_error(), Some(ENOSPC));
        assert_eq!(fs.contents(p("/d/a")), Some(b"1".to_vec()), "untouched");
        fs.set_full(false);
        fs.write(p("/d/a"), b"3").await.unwrap();
        assert_eq!(fs.contents(p("/d/a")), Some(b"3".to_vec()));
    }

    #[tokio::test]
    async fn every_durable_operation_is_a_crash_point() {
        let fs = disk().await;
        fs.write(p("/d/a"), b"1").await.unwrap();
        fs.sync(p("/d/a")).await.unwrap();
        fs.rename(p("/d/a"), p("/d/b")).await.unwrap();
        fs.sync_dir(p("/d")).await.unwrap();
        fs.remove(p("/d/b")).await.unwrap();
        fs.read(p("/d/b")).await.unwrap_err();
        fs.create_dir_all(p("/e")).await.unwrap();
        assert_eq!(
            fs.crash_points().seen(),
            5,
            "reads and mkdir are not counted"
        );
    }
}
