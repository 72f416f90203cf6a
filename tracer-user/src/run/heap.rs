//! Handing freed heap back to the kernel.
//!
//! Start-up parses the kernel's BTF several times (tens of MiB, freed at once) and bursts of
//! records or processes leave freed chunks between live ones; glibc keeps all of it mapped and
//! resident, returning only a free top of the heap. `malloc_trim` releases every free page of
//! every arena, so the daemon's RSS follows what it holds.

use std::time::{Duration, Instant};

/// Allocations at least this large get pages of their own, returned to the kernel when freed.
/// Fixed, because glibc's default threshold rises to the size of the largest such block freed
/// (a library file or the kernel's BTF read whole to find a probe point, several MiB), after
/// which blocks that large come from the heap and stay resident once freed. Above what the
/// running daemon allocates again and again (a batch of spans, an export request and its gzip
/// state, a few hundred KiB each): mapping, faulting in and unmapping those at every batch cost
/// the daemon several µs of CPU per event push.
const MMAP_THRESHOLD: i32 = 4 * 1024 * 1024;

/// Free memory at the top of the heap kept for reuse rather than handed back at every free.
/// Fixing the mmap threshold leaves glibc's trim threshold at its 128 KiB default, so each
/// batch would shrink the heap and fault it in again; the periodic [`trim`] hands back what
/// stays free.
const TRIM_THRESHOLD: i32 = 4 * 1024 * 1024;

/// Sets the allocator up before start-up allocates: large blocks mapped apart, the heap's top
/// kept between trims.
pub fn configure() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets parameters of the allocator; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    };
}

/// How often freed heap is handed back while running: often enough that a burst's freed
/// memory does not stay resident for long, rarely enough that its cost (a walk of the free
/// lists, then page faults where memory is reused) is nothing per record.
const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// When the heap was last trimmed.
pub struct HeapTrim {
    last: Instant,
}

impl HeapTrim {
    /// Trims now (after start-up) and remembers when.
    pub fn now() -> HeapTrim {
        trim();
        HeapTrim { last: Instant::now() }
    }

    /// Trims if [`TRIM_INTERVAL`] has passed since the last time.
    pub fn when_due(&mut self) {
        if self.last.elapsed() >= TRIM_INTERVAL {
            trim();
            self.last = Instant::now();
        }
    }
}

#[cfg(target_env = "gnu")]
fn trim() {
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas; it takes the
    // arenas' locks and is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) };
}

/// Other allocators return memory on their own terms.
#[cfg(not(target_env = "gnu"))]
fn trim() {}
