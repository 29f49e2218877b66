//! loadprobe: a load generator that proves, with eBPF, how every TCP connection it makes ends:
//! who closed it, and how long its TIME_WAIT socket lived.

pub mod compare;
pub mod diag;
pub mod driver;
pub mod kernel;
pub mod probe;
pub mod report;
pub mod run;
pub mod server;
pub mod tune;

#[cfg(test)]
pub(crate) mod testing;
