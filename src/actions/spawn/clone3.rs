//! clone3(2) with `CLONE_INTO_CGROUP`: the new process is born in its
//! cgroup instead of moving itself in.
//!
//! Moving a process into a cgroup (a write to `cgroup.procs`) takes the
//! kernel's `cgroup_threadgroup_rwsem` for writing, and the first writer
//! after a quiet spell waits for an RCU grace period: measured 10–18 ms on
//! the first program of every run (`strace -T` on the write), more than
//! all the rest of a short run's start. A process created in its cgroup
//! takes that lock only for reading (Linux 5.7).
//!
//! There is no C library wrapper for clone3, and with `CLONE_VM` the new
//! process must not return through this process's stack (a `vfork` that
//! returns runs over the frames its parent will return through): so the
//! system call is made here in a few instructions, and the new process
//! calls the child function on its own stack and never returns. Only
//! x86-64 has these instructions; elsewhere, and on a kernel without
//! clone3 or `CLONE_INTO_CGROUP` (or a seccomp filter that refuses it),
//! `spawn` falls back to clone(2) and the write.
//!
//! Since Linux 6.14 (the fix of a race between fork and `cgroup.kill`), a
//! process cloned into a cgroup is killed at birth when that cgroup has
//! been written `cgroup.kill` a different number of times than the
//! parent's own cgroup: the count is taken from the parent's cgroup before
//! the target is known, and compared with the target's after. So a cgroup
//! runbook has killed is never a target (`contain::Joining`), and a start
//! whose new process never ran its first instruction is reaped and made
//! again the other way, and that cgroup is not a target again (runbook's
//! own cgroup may have been killed before, by whoever manages it).
#![allow(unsafe_code)] // a raw clone3(2): see tests/integration/layers.rs

use std::sync::atomic::{AtomicBool, Ordering};

/// `struct clone_args` of `linux/sched.h`, up to `cgroup` (size 88, VER2).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Cleared once the kernel has said it has no clone3 or no
/// `CLONE_INTO_CGROUP`, so that it is not asked before every program.
static SUPPORTED: AtomicBool = AtomicBool::new(cfg!(target_arch = "x86_64"));

/// Starts `child(arg)` in a new process that shares this one's memory, on
/// `stack` (its lowest address and size), inside the cgroup whose
/// directory `cgroup` is open; this thread waits until the new process
/// has called exec or exited. `None` when this way is not available here
/// (no process was made): the caller falls back to clone(2). The error of
/// a clone3 that was refused for another reason (the cgroup removed, a
/// pid limit) is returned as `Some(Err)`; the caller tries the other way
/// too, which reports the same limit in its own words.
///
/// # Safety
/// As clone(2) with `CLONE_VM | CLONE_VFORK`: `child` may make system
/// calls only, every signal is blocked in this thread, and `arg` and
/// `stack` outlive the new process's use of them (it has called exec or
/// exited when this returns).
pub unsafe fn into_cgroup(
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
    stack: &mut [u8],
    cgroup: libc::c_int,
) -> Option<std::io::Result<libc::pid_t>> {
    if !SUPPORTED.load(Ordering::Relaxed) || cgroup < 0 {
        return None;
    }
    // The kernel puts the new stack pointer at `stack + stack_size`: an
    // aligned top, so that the call below enters `child` as the ABI says.
    let low = stack.as_mut_ptr() as u64;
    let top = (low + stack.len() as u64) & !15;
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: low,
        stack_size: top - low,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup as u64,
    };
    // SAFETY: as the function's contract says; `args` lives across the call.
    let ret = unsafe { raw(&args, child, arg) };
    if ret >= 0 {
        return Some(Ok(ret as libc::pid_t));
    }
    let errno = (-ret) as i32;
    // ENOSYS: no clone3 (before 5.3, or filtered); E2BIG/EINVAL: a struct
    // or a flag it does not know (CLONE_INTO_CGROUP is 5.7).
    if matches!(errno, libc::ENOSYS | libc::E2BIG | libc::EINVAL) {
        SUPPORTED.store(false, Ordering::Relaxed);
        return None;
    }
    Some(Err(std::io::Error::from_raw_os_error(errno)))
}

/// The system call: in this process it returns the new pid or `-errno`;
/// the new process, on its own stack, calls `child(arg)` and exits with
/// what it returns (it execs or `_exit`s before that).
#[cfg(target_arch = "x86_64")]
unsafe fn raw(
    args: &CloneArgs,
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> i64 {
    let ret: i64;
    // SAFETY: the caller's contract. The new process starts after the
    // `syscall` with rax = 0 and every other register as here (r12, r13
    // hold `arg` and `child`), on the new stack; it never reaches `2:`.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            // The new process: no frame to unwind into, then child(arg).
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") child,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn raw(
    _args: &CloneArgs,
    _child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    _arg: *mut libc::c_void,
) -> i64 {
    -i64::from(libc::ENOSYS)
}

/// Whether the next program may be started this way (for tests).
#[cfg(test)]
pub fn supported() -> bool {
    SUPPORTED.load(Ordering::Relaxed)
}
