//! Allocator settings, installed once at start (global state, so here in
//! the CLI).

/// Blocks this large or larger are mapped on their own and returned to the
/// system when freed.
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Keeps large buffers (upload parts, Parquet pages, decoded pages) out of
/// glibc's heap.
///
/// glibc raises its mmap threshold each time a mapped block is freed, up
/// to 32 MiB, so after the first few multi-megabyte buffers the later ones
/// come from the arenas, which fragment and hold on to the memory: exporting
/// four days of 1.2M calls each to S3 peaked at 151 MB RSS with the default,
/// 121 MB with a fixed 1 MiB threshold (`cargo xtask bench`, issue 9).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(
        unsafe_code,
        reason = "mallopt is glibc's documented knob; called once, before any thread starts"
    )]
    // SAFETY: mallopt only changes allocator parameters; it is called on the
    // main thread before the runtime or any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
