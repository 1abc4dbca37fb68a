//! The state directory is trusted: what is recorded there decides which
//! programs run, as whoever runs runbook, and which process groups `cancel`
//! kills. So it must be writable by no one else. A state directory, one of
//! its parents, or anything in it that another user could have written is
//! refused, in one sentence, before anything in it is read or written;
//! nothing in it is opened through a link; everything runbook creates there
//! is private (0700 directories, 0600 files), whatever the umask.
//!
//! A team that shares a state directory names the group it trusts with
//! `RUNBOOK_SHARED_GROUP`: then files of that group may be group-writable,
//! and what runbook creates is 0660/2770 for the group. Other users are
//! never trusted.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::OnceLock;

/// The variable that names the group trusted with a shared state directory.
pub const SHARED_GROUP: &str = "RUNBOOK_SHARED_GROUP";

/// The socket of the process that holds the store, in the state directory.
pub const SOCKET: &str = "runbook.sock";

/// How deep the state directory is looked through (the scheduler's run
/// directories sit at `STATE/runs/NAME/journal`).
const DEPTH: usize = 6;

/// The group of `$RUNBOOK_SHARED_GROUP`, if one is named.
pub fn shared_group() -> Result<Option<u32>, String> {
    static GROUP: OnceLock<Result<Option<u32>, String>> = OnceLock::new();
    GROUP
        .get_or_init(|| {
            let Some(name) = std::env::var_os(SHARED_GROUP).filter(|n| !n.is_empty()) else {
                return Ok(None);
            };
            let name = name.to_string_lossy().into_owned();
            let gid = match name.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_id(&name).ok_or_else(|| {
                    format!("{SHARED_GROUP} names the group `{name}`, which this machine does not have")
                })?,
            };
            if !in_group(gid) {
                return Err(format!(
                    "{SHARED_GROUP} names the group `{name}`, which you are not in (or not yet in this session: log in again after being added)"
                ));
            }
            Ok(Some(gid))
        })
        .clone()
}

/// Whether this process is in group `gid` (primary or supplementary).
fn in_group(gid: u32) -> bool {
    if rustix::process::getgid().as_raw() == gid {
        return true;
    }
    rustix::process::getgroups()
        .unwrap_or_default()
        .iter()
        .any(|g| g.as_raw() == gid)
}

/// The mode of a directory runbook creates.
pub fn dir_mode() -> u32 {
    match shared_group() {
        Ok(Some(_)) => 0o2770,
        _ => 0o700,
    }
}

/// The mode of a file runbook creates.
pub fn file_mode() -> u32 {
    match shared_group() {
        Ok(Some(_)) => 0o660,
        _ => 0o600,
    }
}

/// The umask runbook works under: what it creates itself and what sled
/// creates come out private. Step programs get the umask runbook was
/// started with (`spawn`).
pub fn umask() -> u32 {
    match shared_group() {
        Ok(Some(_)) => 0o007,
        _ => 0o077,
    }
}

/// Whether a state directory was there to be looked at.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Present,
    Missing,
}

/// Checks the state directory `dir` and everything in it, and tightens the
/// modes of what an earlier version created readable by others. With
/// `create`, a missing directory is made (private); without, it is left
/// missing, so that a command that only reads creates nothing.
pub fn state_dir(dir: &Path, create: bool) -> Result<Found, String> {
    shared_group()?;
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !create {
                return Ok(Found::Missing);
            }
            make_dir(dir).map_err(|e| cannot_create(dir, &e))?;
        }
        Err(e) => return Err(cannot_use(dir, &crate::error::io_reason(&e))),
        Ok(_) => {}
    }
    check_path(dir, Role::State)?;
    walk(dir, DEPTH)?;
    Ok(Found::Present)
}

/// What a checked directory is for, for its messages.
#[derive(Clone, Copy)]
enum Role {
    State,
    Backup,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::State => "the state directory",
            Role::Backup => "the backup directory",
        }
    }

    fn refusal(self, path: &Path, why: &str) -> String {
        match self {
            Role::State => refusal(path, why),
            Role::Backup => format!(
                "the backup directory {} is refused: {why}; others could read or replace the dumps in it. Use a directory only you can write",
                path.display()
            ),
        }
    }
}

/// A directory of the user's own that runbook writes into but does not
/// keep (a `backup` step's): made private when missing; refused when
/// another user owns it or can write it, or a parent of it. What is in it
/// is not looked at.
pub fn own_dir(dir: &Path) -> Result<(), String> {
    shared_group()?;
    if std::fs::symlink_metadata(dir).is_err() {
        make_dir(dir).map_err(|e| {
            format!(
                "cannot create {} {}: {}",
                Role::Backup.name(),
                dir.display(),
                crate::error::io_reason(&e)
            )
        })?;
    }
    check_path(dir, Role::Backup)
}

/// Checks a directory runbook keeps files in outside the state directory
/// (the scheduler's locks), creating it when missing.
pub fn outside_dir(dir: &Path) -> Result<(), String> {
    state_dir(dir, true).map(|_| ())
}

fn cannot_create(dir: &Path, e: &std::io::Error) -> String {
    format!(
        "cannot create the state directory {}: {}; choose another with --state DIR",
        dir.display(),
        crate::error::io_reason(e)
    )
}

fn cannot_use(dir: &Path, why: &str) -> String {
    format!(
        "cannot use the state directory {}: {why}; choose another with --state DIR",
        dir.display()
    )
}

/// The directory itself (followed if it is a link the user owns) and each
/// of its parents: a parent another user can write lets them move the
/// state directory aside and put theirs in its place, unless the parent
/// is sticky (`/tmp`).
fn check_path(dir: &Path, role: Role) -> Result<(), String> {
    let link = std::fs::symlink_metadata(dir)
        .map_err(|e| cannot_use(dir, &crate::error::io_reason(&e)))?;
    if link.file_type().is_symlink() {
        if let Some(why) = not_owned(&link) {
            return Err(role.refusal(dir, &format!("it is a link that {why}")));
        }
    }
    let meta = std::fs::metadata(dir).map_err(|e| cannot_use(dir, &crate::error::io_reason(&e)))?;
    if !meta.is_dir() {
        return Err(cannot_use(dir, "it is not a directory"));
    }
    if let Some(why) = distrust(&meta) {
        return Err(role.refusal(dir, &format!("it {why}")));
    }
    let real =
        std::fs::canonicalize(dir).map_err(|e| cannot_use(dir, &crate::error::io_reason(&e)))?;
    for parent in real.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(parent) else {
            continue;
        };
        // A sticky parent (`/tmp`) lets others write in it but not move
        // what is yours; its owner still can, so it must be you or root.
        let sticky = meta.mode() & 0o1000 != 0;
        let why = not_owned(&meta).or_else(|| {
            if sticky {
                None
            } else {
                writable_by_others(&meta)
            }
        });
        if let Some(why) = why {
            return Err(format!(
                "{} {} is refused: its parent {} {why}, so they could put another directory in its place; use a directory under one only you can write (for example one made by `mktemp -d`)",
                role.name(),
                dir.display(),
                parent.display()
            ));
        }
    }
    Ok(())
}

/// Everything in `dir`, `depth` levels down: no links, nothing of another
/// user, nothing others can write; readable-by-others is tightened.
fn walk(dir: &Path, depth: usize) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| cannot_use(dir, &crate::error::io_reason(&e)))?;
    for entry in entries {
        let entry = entry.map_err(|e| cannot_use(dir, &crate::error::io_reason(&e)))?;
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue; // removed meanwhile
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Err(refusal(
                &path,
                "it is a link, and runbook follows no links in its state directory",
            ));
        }
        // The socket of the process that holds a store (this one's, or a
        // scheduled run's in `scheduled/NAME/`); no other.
        let served = kind.is_socket() && entry.file_name() == SOCKET;
        if !kind.is_dir() && !kind.is_file() && !served {
            return Err(refusal(&path, "it is neither a file nor a directory"));
        }
        if let Some(why) = distrust(&meta) {
            return Err(refusal(&path, &format!("it {why}")));
        }
        tighten(&path, &meta);
        if kind.is_dir() && depth > 0 {
            walk(&path, depth - 1)?;
        }
    }
    Ok(())
}

/// Takes from group and others what an earlier runbook left them (read).
fn tighten(path: &Path, meta: &Metadata) {
    let mode = meta.mode() & 0o7777;
    let keep = if meta.is_dir() {
        dir_mode()
    } else {
        file_mode()
    } | 0o6000;
    if mode & !keep != 0 && meta.uid() == me() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & keep));
    }
}

fn refusal(path: &Path, why: &str) -> String {
    let share = match shared_group() {
        Ok(Some(_)) => String::new(),
        _ => format!(" (a directory shared with a trusted group needs {SHARED_GROUP}=GROUP)"),
    };
    format!(
        "{} is refused: {why}; what runbook keeps there decides what runs as you, so only you may write it{share}. Use a directory only you can write, for example `--state \"$(mktemp -d)\"`",
        path.display()
    )
}

/// Why a file or directory of the state directory is not to be trusted.
pub fn distrust(meta: &Metadata) -> Option<String> {
    not_owned(meta).or_else(|| writable_by_others(meta))
}

fn not_owned(meta: &Metadata) -> Option<String> {
    let owner = meta.uid();
    let shared = matches!(shared_group(), Ok(Some(g)) if g == meta.gid());
    (owner != me() && owner != 0 && !shared)
        .then(|| format!("belongs to {}, not to you ({})", user(owner), user(me())))
}

fn writable_by_others(meta: &Metadata) -> Option<String> {
    let mode = meta.mode() & 0o7777;
    let shared = matches!(shared_group(), Ok(Some(g)) if g == meta.gid());
    if mode & 0o002 != 0 {
        return Some(format!("can be written by every user (mode {mode:04o})"));
    }
    (mode & 0o020 != 0 && !shared && !own_private_group(meta.gid())).then(|| {
        format!(
            "can be written by the group {} (mode {mode:04o})",
            group(meta.gid())
        )
    })
}

/// Whether `gid` is the user's own private group (named as the user, the
/// user's primary group, no other member): the default on Debian and
/// Fedora, with umask 002, so `~/.local` is group-writable by it. Its
/// group-write grants no one else anything.
fn own_private_group(gid: u32) -> bool {
    static MINE: OnceLock<Option<u32>> = OnceLock::new();
    let mine = MINE.get_or_init(|| {
        let primary = rustix::process::getgid().as_raw();
        let me = user_name(me())?;
        let (name, members) = group_entry(primary)?;
        // Group 0 is shared by system accounts (sync, halt, operator) on
        // some systems; and a group that is another local user's primary
        // group too is not private.
        let shared_as_primary = std::fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let fields: Vec<&str> = l.split(':').collect();
                Some((*fields.first()?, fields.get(3)?.parse::<u32>().ok()?))
            })
            .any(|(user, gid)| gid == primary && user != me);
        (primary != 0 && name == me && members.iter().all(|m| *m == me) && !shared_as_primary)
            .then_some(primary)
    });
    *mine == Some(gid)
}

/// Makes `dir` and its missing parents, private (for a shared group:
/// that group's, `2770`).
pub fn make_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // (A relative path's last ancestor is "", which never exists.)
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(dir_mode())
        .create(dir)?;
    // Only what was made here goes to the shared group.
    for made in missing {
        share(made)?;
    }
    Ok(())
}

/// Gives what this user just made to the shared group, with the group's
/// mode (the umask may have taken its bits); nothing without one.
fn share(path: &Path) -> std::io::Result<()> {
    let Ok(Some(gid)) = shared_group() else {
        return Ok(());
    };
    let meta = std::fs::symlink_metadata(path)?;
    if meta.uid() != me() || meta.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, None, Some(gid))?;
    let mode = if meta.is_dir() {
        dir_mode()
    } else {
        file_mode()
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Gives a socket (or another file this process just made at `path`) the
/// mode and group of a file runbook creates: 0600, or 0660 for the shared
/// group. The state directory around it is private already; this is the
/// second lock on the door.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    if let Ok(Some(gid)) = shared_group() {
        std::os::unix::fs::lchown(path, None, Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(file_mode()))
}

/// Whether the user `uid` (of primary group `gid`), on the other end of
/// the state directory's socket, may look at and steer its runs: this
/// user, root, or, with a shared group, a member of it. Otherwise the
/// sentence that says what they lack.
pub fn may_steer(uid: u32, gid: u32) -> Result<(), String> {
    if uid == me() || uid == 0 {
        return Ok(());
    }
    if let Ok(Some(shared)) = shared_group() {
        let member = gid == shared
            || user_name(uid).is_some_and(|name| {
                group_entry(shared).is_some_and(|(_, members)| members.contains(&name))
            });
        if member {
            return Ok(());
        }
        return Err(format!(
            "{} is not in the group {} that shares this state directory ({SHARED_GROUP}); ask for it to be added",
            user(uid),
            group(shared)
        ));
    }
    Err(format!(
        "this state directory belongs to {} alone; {} may not use it (a team shares one through a group: {SHARED_GROUP})",
        user(me()),
        user(uid)
    ))
}

/// A new private file, never one already there nor what a link there
/// points at.
pub fn create_new(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(file_mode())
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(file_mode()))?;
    if let Ok(Some(gid)) = shared_group() {
        std::os::unix::fs::fchown(&file, None, Some(gid))?;
    }
    Ok(file)
}

/// Opens (creating when missing) a file to read and write, without
/// following a link, and only if it is a plain file no one else can write.
pub fn open_rw(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(file_mode())
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    trusted_file(path, &file)?;
    Ok(file)
}

/// Reads a whole file of the state directory, up to `limit` bytes: not
/// through a link, not a pipe or device (which could block), not one
/// another user could have written.
pub fn read(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    read_with_owner(path, limit).map(|(bytes, _)| bytes)
}

/// `read`, and the uid of the file's owner: who wrote it.
pub fn read_with_owner(path: &Path, limit: u64) -> std::io::Result<(Vec<u8>, u32)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    let owner = trusted_file(path, &file)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "{} is larger than the {limit} bytes it may be",
            path.display()
        )));
    }
    Ok((bytes, owner))
}

/// Checks an open file of the state directory; its owner's uid.
fn trusted_file(path: &Path, file: &File) -> std::io::Result<u32> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a plain file",
            path.display()
        )));
    }
    match distrust(&meta) {
        Some(why) => Err(std::io::Error::other(format!("{} {why}", path.display()))),
        None => Ok(meta.uid()),
    }
}

/// Writes `name` in `dir` atomically: a reader sees all of it or nothing.
/// The temporary file is new (never one planted there) and private; what a
/// writer killed before its rename left is removed.
pub fn write_whole(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    replace(dir, name, body, true)
}

/// As `write_whole`, without waiting for the disk: for what a power loss
/// makes worthless anyway (a view written again within a second; a note
/// about live processes or cgroups, which a restart ends too). A process
/// that is killed leaves it in the page cache all the same.
pub fn write_view(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    replace(dir, name, body, false)
}

fn replace(dir: &Path, name: &str, body: &[u8], sync: bool) -> std::io::Result<()> {
    make_dir(dir)?;
    sweep_abandoned(dir, name);
    let tmp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        random()
    ));
    let written = create_new(&tmp).and_then(|mut file| {
        file.write_all(body)?;
        if sync {
            file.sync_all()?;
        }
        Ok(())
    });
    match written.and_then(|()| std::fs::rename(&tmp, dir.join(name))) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Removes the temporary files of `name` whose writers are gone.
fn sweep_abandoned(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|f| f.strip_suffix(".tmp"))
            .and_then(|f| f.split('.').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !super::process::alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// 64 bits from the kernel's random source, for names no one can guess.
pub fn random() -> u64 {
    let mut bytes = [0u8; 8];
    let got = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    if got.ok() != Some(bytes.len()) {
        // Never short for 8 bytes once the pool is ready; the time is a
        // fallback that is still unique.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return nanos ^ u64::from(std::process::id()).rotate_left(40);
    }
    u64::from_ne_bytes(bytes)
}

/// The user this process runs as.
pub fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

pub use super::accounts::{account, member_of, this_account, user};
use super::accounts::{group, group_entry, group_id, user_name};

#[cfg(test)]
mod tests;
