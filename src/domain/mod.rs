//! The pure core: no network, no disk, no clock. Everything here takes `now` as an argument so
//! that it can be tested exhaustively.

pub mod classify;
pub mod credential;
pub mod plan;
pub mod time;
