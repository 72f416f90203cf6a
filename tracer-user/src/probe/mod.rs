//! The kernel side as the daemon sees it: the eBPF programs, the targets map, uprobes, kernel
//! struct offsets, and the records the programs write.

pub mod attach;
pub mod kernel_offsets;
// Decoding checks each length before it indexes; a borrowing reader would say so in types.
#[expect(clippy::indexing_slicing, reason = "lengths are checked before each index")]
pub mod record;
pub mod target_pids;
pub mod uprobes;
pub mod userspans;
