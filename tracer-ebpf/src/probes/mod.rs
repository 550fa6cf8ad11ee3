pub mod goroutines;
pub mod gotls;
pub mod process;
pub mod sock;
pub mod sockio;
pub mod syscalls;
