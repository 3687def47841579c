//! The `fuser::Filesystem` adapter: a thin wrapper around [`RegistryFs`] so the filesystem logic
//! is testable without FUSE in the loop.
//!
//! Every callback has one shape: copy the arguments, [`run`] the operation (it answers at once
//! when nothing has to wait, and moves to the async runtime when something does, so no FUSE
//! thread ever blocks on the network), and reply exactly once, with the result or with the
//! error's errno.
//!
//! The one state kept here is fuser's: the backing registrations of layers the kernel reads
//! itself (FUSE passthrough). Which opens get one is decided by [`RegistryFs::open`].

use crate::mount::lock;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex, Weak};

use fuser::{
    AccessFlags, BackingId, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use super::error::FsError;
use super::fs::{Attr, RegistryFs};
use super::tree::Kind;

/// The adapter the FUSE session drives.
pub struct FuseAdapter {
    fs: Arc<RegistryFs>,
    rt: Handle,
    backing: Arc<Mutex<BackingIds>>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<RegistryFs>, rt: Handle) -> Self {
        FuseAdapter {
            fs,
            rt,
            backing: Arc::default(),
        }
    }
}

/// Backing registrations of passthrough handles. Each lives until the release of the last
/// handle using it (the kernel fails reads of a handle whose registration is gone), and all
/// handles of one inode share one (it refuses a second).
#[derive(Default)]
struct BackingIds {
    by_fh: HashMap<u64, Arc<BackingId>>,
    by_ino: HashMap<u64, Weak<BackingId>>,
}

impl BackingIds {
    /// The inode's registration, or a new one from `register`, held for handle `fh`.
    fn attach(
        &mut self,
        fh: u64,
        ino: u64,
        register: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> std::io::Result<Arc<BackingId>> {
        let id = match self.by_ino.get(&ino).and_then(Weak::upgrade) {
            Some(id) => id,
            None => {
                let id = Arc::new(register()?);
                self.by_ino.insert(ino, Arc::downgrade(&id));
                id
            }
        };
        self.by_fh.insert(fh, id.clone());
        Ok(id)
    }

    /// Drops handle `fh`'s hold; the last one closes the registration.
    fn release(&mut self, fh: u64) {
        if self.by_fh.remove(&fh).is_some() {
            self.by_ino.retain(|_, id| id.strong_count() > 0);
        }
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

impl From<&Attr> for FileAttr {
    fn from(a: &Attr) -> Self {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.mtime,
            crtime: a.mtime,
            kind: file_type(a.kind),
            perm: a.perm,
            nlink: if a.kind == Kind::Dir { 2 } else { 1 },
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            // The largest request the kernel sends a FUSE daemon: `cat`, `cp` and friends size
            // their buffers from it, so each of their reads and writes is one round trip of
            // 1 MiB instead of eight of 128 KiB.
            blksize: 1024 * 1024,
            flags: 0,
        }
    }
}

/// Drives `fut`, which replies to the kernel itself. It is polled once right here on the FUSE
/// thread, in the runtime's context: an answer that needs no I/O (attributes in memory, a
/// cached block, the close of a file open for reading) then goes back at once instead of
/// queueing behind runtime workers that may be busy streaming layers; a close waited
/// milliseconds that way. A future that has to wait moves to the runtime as it is, so nothing
/// its first poll started is lost or done twice.
fn run<F>(rt: &Handle, fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let _context = rt.enter();
    let mut fut = Box::pin(fut);
    // The runtime polls the task as soon as it is spawned, with a waker of its own, so a
    // wake-up aimed at this first poll's no-op waker is not missed.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // As in a runtime task, a panic ends only this operation: its reply, dropped with the
    // future, answers EIO, and the FUSE thread carries on.
    let first =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
    match first {
        Ok(std::task::Poll::Pending) => drop(rt.spawn(fut)),
        Ok(std::task::Poll::Ready(())) => {}
        Err(_) => tracing::error!("a filesystem operation panicked; it answered EIO"),
    }
}

/// Runs `op` and answers an empty reply with its result.
fn run_empty<F>(rt: &Handle, op: &'static str, reply: ReplyEmpty, fut: F)
where
    F: std::future::Future<Output = Result<(), FsError>> + Send + 'static,
{
    run(rt, async move {
        match fut.await {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(op, &e)),
        }
    });
}

/// Runs `op` and answers an entry reply with its result.
fn run_entry<F>(rt: &Handle, op: &'static str, reply: ReplyEntry, fut: F)
where
    F: std::future::Future<Output = Result<super::fs::Entry, FsError>> + Send + 'static,
{
    run(rt, async move {
        match fut.await {
            Ok(e) => reply.entry(&e.ttl, &FileAttr::from(&e.attr), Generation(0)),
            Err(e) => reply.error(errno(op, &e)),
        }
    });
}

/// A name from the kernel as UTF-8; every valid name in the tree is.
fn utf8(name: &OsStr) -> Result<String, FsError> {
    name.to_str()
        .map(str::to_string)
        .ok_or(FsError::Invalid("names are UTF-8"))
}

fn errno(op: &str, e: &FsError) -> Errno {
    if e.is_routine() {
        tracing::debug!(op, error = %e, "operation failed");
    } else {
        tracing::warn!(op, error = %e, "operation failed");
    }
    Errno::from_i32(e.errno())
}

/// Adds INIT flags one at a time: one unsupported bit would make the kernel config refuse the
/// whole set.
fn add_capability(config: &mut KernelConfig, flag: InitFlags) {
    if let Err(unsupported) = config.add_capabilities(flag) {
        tracing::debug!(?unsupported, "kernel lacks a FUSE capability");
    }
}

impl fuser::Filesystem for FuseAdapter {
    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permission is the registry's to decide, at the operation itself.
        reply.ok();
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
        ] {
            add_capability(config, flag);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        // Passthrough needs a stack depth of at least 1; 1 keeps the mount usable as a lower
        // layer of overlayfs (backing files must then sit on a plain filesystem).
        let passthrough = match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
            Ok(()) => config.set_max_stack_depth(1).is_ok(),
            Err(_) => false,
        };
        if !passthrough {
            tracing::debug!("kernel lacks FUSE passthrough; layers are read through the daemon");
        }
        self.fs.set_passthrough(passthrough);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let fs = self.fs.clone();
        let name = name.to_owned();
        let caller = req.pid();
        run_entry(&self.rt, "lookup", reply, async move {
            // A name that is not UTF-8 cannot exist here.
            let name = utf8(&name).map_err(|_| FsError::NotFound)?;
            fs.lookup_by(parent.0, &name, Some(caller)).await
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let fs = self.fs.clone();
        run(&self.rt, async move {
            match fs.getattr(ino.0).await {
                Ok(e) => reply.attr(&e.ttl, &FileAttr::from(&e.attr)),
                Err(e) => reply.error(errno("getattr", &e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let fs = self.fs.clone();
        run(&self.rt, async move {
            match fs.readlink(ino.0).await {
                Ok(target) => reply.data(target.as_bytes()),
                Err(e) => reply.error(errno("readlink", &e)),
            }
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY || truncate;
        let opener = write.then(|| thread_group(req.pid())).flatten();
        let fs = self.fs.clone();
        let backing = self.backing.clone();
        run(&self.rt, async move {
            match fs.open(ino.0, write, truncate).await {
                Ok(o) => {
                    if let Some(process) = opener {
                        fs.set_owner(o.fh, process);
                    }
                    let flags = if o.keep_cache {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    if let Some(p) = &o.passthrough {
                        let registered = lock(&backing)
                            .attach(o.fh, p.ino, || reply.open_backing(p.file.as_ref()));
                        match registered {
                            // The kernel fails a passthrough open with any other flag than
                            // direct I/O and no-flush (KEEP_CACHE included) with EIO.
                            Ok(id) => {
                                return reply.opened_passthrough(
                                    FileHandle(o.fh),
                                    FopenFlags::empty(),
                                    &id,
                                );
                            }
                            Err(e) => fs.passthrough_refused(o.fh, &e),
                        }
                    }
                    reply.opened(FileHandle(o.fh), flags)
                }
                Err(e) => reply.error(errno("open", &e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        run(&self.rt, async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno("read", &e)),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        // Only handles open for writing have an owner to tell apart; a single-threaded
        // writer's thread is its process, so `/proc` is read only for other threads.
        let process = match self.fs.owner(fh.0) {
            None => None,
            Some(owner) if owner == req.pid() => Some(owner),
            Some(_) => thread_group(req.pid()),
        };
        run_empty(&self.rt, "flush", reply, async move {
            fs.flush_from(fh.0, process).await
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fsync pushes what is pending, like the close of the file would.
        let fs = self.fs.clone();
        run_empty(
            &self.rt,
            "fsync",
            reply,
            async move { fs.flush(fh.0).await },
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.backing).release(fh.0);
        let fs = self.fs.clone();
        run(&self.rt, async move {
            fs.release(fh.0).await;
            reply.ok();
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let fs = self.fs.clone();
        let name = name.to_owned();
        let opener = thread_group(req.pid());
        run(&self.rt, async move {
            let Some(name) = name.to_str() else {
                return reply.error(Errno::EINVAL);
            };
            match fs.create(parent.0, name).await {
                Ok((e, o)) => {
                    if let Some(process) = opener {
                        fs.set_owner(o.fh, process);
                    }
                    reply.created(
                        &e.ttl,
                        &FileAttr::from(&e.attr),
                        Generation(0),
                        FileHandle(o.fh),
                        FopenFlags::empty(),
                    )
                }
                Err(e) => reply.error(errno("create", &e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let fs = self.fs.clone();
        // The one copy out of fuser's request buffer; the upload queue shares it from here.
        let data = bytes::Bytes::copy_from_slice(data);
        run(&self.rt, async move {
            match fs.write(fh.0, offset, data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno("write", &e)),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fs = self.fs.clone();
        run(&self.rt, async move {
            let changed = match size {
                Some(size) => fs.truncate(fh.map(|f| f.0), ino.0, size),
                // Times and modes are not stored; accepted where content may change, so
                // `cp -p` and `touch` work on tags.
                None => match fs.is_changeable(ino.0) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(FsError::NotPermitted("images are immutable")),
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = changed {
                return reply.error(errno("setattr", &e));
            }
            match fs.getattr(ino.0).await {
                Ok(e) => reply.attr(&e.ttl, &FileAttr::from(&e.attr)),
                Err(e) => reply.error(errno("setattr", &e)),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let fs = self.fs.clone();
        let name = name.to_owned();
        let caller = req.pid();
        run_entry(&self.rt, "mkdir", reply, async move {
            fs.mkdir_by(parent.0, &utf8(&name)?, Some(caller)).await
        });
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let fs = self.fs.clone();
        let (name, target) = (link_name.to_owned(), target.to_owned());
        run_entry(&self.rt, "symlink", reply, async move {
            fs.symlink(parent.0, &utf8(&name)?, &utf8(target.as_os_str())?)
                .await
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        let name = name.to_owned();
        let caller = req.pid();
        run_empty(&self.rt, "unlink", reply, async move {
            let name = utf8(&name).map_err(|_| FsError::NotFound)?;
            fs.unlink_by(parent.0, &name, Some(caller)).await
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        let name = name.to_owned();
        run_empty(&self.rt, "rmdir", reply, async move {
            fs.rmdir(parent.0, &utf8(&name).map_err(|_| FsError::NotFound)?)
                .await
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            // RENAME_EXCHANGE / NOREPLACE cannot be honoured atomically by a registry.
            return reply.error(Errno::EINVAL);
        }
        let fs = self.fs.clone();
        let (name, newname) = (name.to_owned(), newname.to_owned());
        run_empty(&self.rt, "rename", reply, async move {
            fs.rename(parent.0, &utf8(&name)?, newparent.0, &utf8(&newname)?)
                .await
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        run(&self.rt, async move {
            match fs.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno("opendir", &e)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(snapshot) = self.fs.dir_snapshot(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        {
            let entries = &snapshot.entries;
            let dots = [(ino.0, "."), (ino.0, "..")];
            let all = dots
                .iter()
                .map(|(i, n)| (*i, FileType::Directory, *n))
                .chain(entries.iter().map(|d| {
                    (
                        d.entry.attr.ino,
                        file_type(d.entry.attr.kind),
                        d.name.as_str(),
                    )
                }));
            for (i, (child, kind, name)) in all.enumerate().skip(offset as usize) {
                if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                    break;
                }
            }
            reply.ok();
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(snapshot) = self.fs.dir_snapshot(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let fs = &self.fs;
        {
            let this = &snapshot.this;
            let mut i = 0u64;
            for name in [".", ".."] {
                i += 1;
                if i > offset
                    && reply.add(
                        ino,
                        i,
                        name,
                        &this.ttl,
                        &FileAttr::from(&this.attr),
                        Generation(0),
                    )
                {
                    return reply.ok();
                }
            }
            for d in &snapshot.entries {
                i += 1;
                if i <= offset {
                    continue;
                }
                let attr = FileAttr::from(&d.entry.attr);
                if reply.add(attr.ino, i, &d.name, &d.entry.ttl, &attr, Generation(0)) {
                    break;
                }
                // The kernel holds a reference to every entry it was given.
                fs.remember_entry(ino.0, &d.name, d.entry.attr.ino);
            }
            reply.ok();
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A registry has no fixed capacity; report a large, mostly free one so `df` and
        // installers that check free space are content.
        let blocks = 1u64 << 32;
        reply.statfs(blocks, blocks, blocks, 1 << 24, 1 << 24, 4096, 255, 4096);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // ENOSYS once makes the kernel stop asking, which keeps `ls -l` cheap.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }
}

/// The process (thread group) a thread belongs to: the kernel names the calling thread in a
/// request, and a writer's threads all belong to one process. Read from `/proc` on the FUSE
/// worker thread, not the runtime; `None` when the thread is already gone.
fn thread_group(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::run;
    use std::sync::mpsc;
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn an_operation_with_nothing_to_wait_for_answers_on_the_calling_thread() {
        let rt = runtime();
        let (tx, rx) = mpsc::channel();
        run(rt.handle(), async move {
            let _ = tx.send(std::thread::current().id());
        });
        assert_eq!(rx.try_recv(), Ok(std::thread::current().id()));
    }

    #[test]
    fn an_operation_that_waits_finishes_on_the_runtime() {
        let rt = runtime();
        let (wake, woken) = tokio::sync::oneshot::channel::<u32>();
        let (tx, rx) = mpsc::channel();
        run(rt.handle(), async move {
            // A timer and a channel, both first polled off the runtime's threads.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx.send(woken.await);
        });
        assert!(rx.try_recv().is_err(), "it had to wait");
        wake.send(7).expect("send");
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(Ok(7)));
    }

    #[test]
    fn a_panicking_operation_does_not_unwind_into_the_caller() {
        let rt = runtime();
        run(rt.handle(), async { panic!("an operation's bug") });
        let (tx, rx) = mpsc::channel();
        run(rt.handle(), async move {
            let _ = tx.send(());
        });
        assert_eq!(rx.try_recv(), Ok(()), "the thread carries on");
    }
}
