//! Unix users and groups as the system names them: for messages, for the
//! accounts records hold, and for who is in which group.
#![allow(unsafe_code)] // the C library's user and group lookups: see tests/integration/layers.rs

/// A user's name and number, for messages.
pub fn user(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("user {name} ({uid})"),
        None => format!("user {uid}"),
    }
}

/// The account a record names: the user's name, or its number when the
/// system has no name for it.
pub fn account(uid: u32) -> String {
    user_name(uid).unwrap_or_else(|| uid.to_string())
}

/// The account of this process's real user: who typed the command.
pub fn this_account() -> String {
    account(rustix::process::getuid().as_raw())
}

pub fn user_name(uid: u32) -> Option<String> {
    // SAFETY: a passwd is plain C data; all zeros is a valid (empty) one.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pw` and `buf`, both ours and sized.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if r == 0 && !out.is_null() && !pw.pw_name.is_null() {
        // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
    None
}

/// A group's name and its members' names.
pub fn group_entry(gid: u32) -> Option<(String, Vec<String>)> {
    // SAFETY: a group is plain C data; all zeros is a valid (empty) one.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 1 << 16];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrgid_r writes into `gr` and `buf`, both ours and sized.
    let r = unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
    if r != 0 || out.is_null() || gr.gr_name.is_null() {
        return None;
    }
    // SAFETY: the name and the member list point into `buf`, NUL-terminated
    // strings and a NULL-terminated array, as getgrgid_r leaves them.
    unsafe {
        let name = std::ffi::CStr::from_ptr(gr.gr_name)
            .to_string_lossy()
            .into_owned();
        let mut members = Vec::new();
        let mut at = gr.gr_mem;
        while !at.is_null() && !(*at).is_null() {
            members.push(std::ffi::CStr::from_ptr(*at).to_string_lossy().into_owned());
            at = at.add(1);
        }
        Some((name, members))
    }
}

/// A group's name and number, for messages.
pub fn group(gid: u32) -> String {
    match group_entry(gid) {
        Some((name, _)) => format!("{name} ({gid})"),
        None => gid.to_string(),
    }
}

pub fn group_id(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a group is plain C data; all zeros is a valid (empty) one.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 1 << 16];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r reads `name` and writes into `gr` and `buf`.
    let r = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    (r == 0 && !out.is_null()).then_some(gr.gr_gid)
}

/// The primary group of the user named `name`.
fn primary_group(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a passwd is plain C data; all zeros is a valid (empty) one.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r reads `name` and writes into `pw` and `buf`.
    let r = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    (r == 0 && !out.is_null()).then_some(pw.pw_gid)
}

/// Whether the user named `user` is in the group named `group`: as a
/// listed member, or as its primary group. A name the system does not
/// know is in no group.
pub fn member_of(user: &str, group: &str) -> bool {
    let Some(gid) = group_id(group) else {
        return false;
    };
    primary_group(user) == Some(gid)
        || group_entry(gid).is_some_and(|(_, members)| members.iter().any(|m| m == user))
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_is_in_its_own_group_and_nobody_in_a_group_that_does_not_exist() {
        assert!(super::member_of("root", "root"));
        assert!(!super::member_of("root", "no-such-group-anywhere"));
        assert!(!super::member_of("no-such-user-anywhere", "root"));
    }
}
