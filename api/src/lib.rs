//! The JSON documents Cyclops's services serve to operators, typed once:
//! the services build them, `cyclops-count` reads them, and a field renamed
//! on one side is a compile error on the other.
//!
//! - [`count`]: `/count` — Cyclops's own fields, which every instance
//!   serves (and the Python Cyclops did), then each service's own.
//!
//! Serde only: `cyclops-count` depends on this and nothing of the services.

pub mod count;
