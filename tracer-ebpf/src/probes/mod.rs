pub mod gotls;
pub mod process;
pub mod sock;
pub mod syscalls;
pub mod sockio;
