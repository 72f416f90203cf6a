//! The kernel side as the daemon sees it: the eBPF programs, the targets map, uprobes, kernel
//! struct offsets, and the records the programs write.

pub mod attach;
pub mod kernel_offsets;
pub mod record;
pub mod uprobes;
