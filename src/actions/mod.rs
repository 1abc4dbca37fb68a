//! What steps do to the world. Each action is a plain async function with
//! its own tests; the engine's driver (to come) calls them.

pub mod command;
