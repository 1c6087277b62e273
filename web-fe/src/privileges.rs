//! Keeps the process from ever gaining privileges (setuid binaries, file capabilities).
//! Compose sets `no-new-privileges` on the container; swarm services cannot (stack files
//! drop `security_opt`), so web-fe sets the same flag on itself at start-up.

/// Sets `PR_SET_NO_NEW_PRIVS` on this process and everything it starts.
#[cfg(target_os = "linux")]
pub fn forbid_new_privileges() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integer arguments and touches no
    // memory of ours; it can only fail with an errno, which is returned.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Other systems have no such flag; nothing to do.
#[cfg(not(target_os = "linux"))]
pub fn forbid_new_privileges() -> std::io::Result<()> {
    Ok(())
}
