//! How the hub process asks the C allocator to treat large buffers.
//!
//! glibc serves an allocation of 128 KiB or more with its own `mmap`, and
//! gives it back to the kernel on `free`, until the first such buffer is
//! freed: from then on it raises that threshold (up to 32 MiB) and serves
//! large buffers from its heap arenas, which keep the pages once they are
//! freed. For a hub that means one burst of large messages (a 16 MiB frame,
//! a big batch reply) stays in its RSS for good: the 60 s chaos soak showed
//! +25–33 MiB of RSS that way, and +1 MiB with the threshold fixed.

/// Keeps large buffers (128 KiB and up, glibc's own starting point) on
/// `mmap`, so their memory goes back to the kernel when they are freed.
/// Does nothing on platforms without glibc.
pub fn return_large_buffers_to_the_kernel() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const LARGE: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only sets a glibc tuning parameter; it takes no
        // pointers and is safe to call at any time, from any thread.
        let done = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE) };
        if done != 1 {
            tracing::debug!("mallopt(M_MMAP_THRESHOLD) was refused; large buffers may stay in RSS");
        }
    }
}
