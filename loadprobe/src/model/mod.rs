//! The words every layer shares: what a task does with its connection (`Mode`, `Workload`),
//! the ends of a connection (`Side`, `Closer`, `Substate`), TIME_WAIT counts over time, and the
//! live board a run's parts write to. Nothing here uses another module of the crate, so the probe,
//! the load driver and the record can all speak of the same things without knowing each other.

mod closer;
mod histogram;
mod live;
mod mode;
mod side;
mod timewait;

pub use closer::Closer;
pub use histogram::record_growing;
pub use live::Live;
pub use mode::{Mode, Workload};
pub use side::{Side, Substate};
pub use timewait::TimeWaitPoint;
