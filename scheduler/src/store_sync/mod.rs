//! Keeping the job store in step with Redis: draining the outbox, reconciling after a
//! Redis loss, and retention. Only `scheduler` talks to the store.

pub mod drain;
pub mod reconcile;
pub mod retention;
