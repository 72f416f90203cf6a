//! What is known per object key and device.

pub mod dbclient;
