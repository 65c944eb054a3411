//! The simulator's own contract tests: it must behave like a real instance and real providers
//! for the keeper's tests to mean anything.

mod companion;
mod faults;
mod providers;
mod support;
mod table_api;
