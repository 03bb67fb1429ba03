//! End-to-end tests: one binary, run against the real local stack
//! (`make test` starts it). Helpers live in `cyclops_tests`.

mod cluster;
mod cluster_group;
mod contract;
mod durability;
mod farm;
mod flood;
mod forwarder;
mod hostile;
mod intake;
mod keys;
mod lag;
mod pipeline;
mod sdks;
mod secrets;
mod spool;
mod stack;
mod status;
