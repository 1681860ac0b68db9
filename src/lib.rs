//! tmcs — trusted mobile certificate server.
//!
//! Layers (see `ARCHITECTURE.md`): `api` on top; domain modules (`pki`,
//! `audit`, …) in the middle; infrastructure (`hsm`, `store`, `config`,
//! `clock`) at the bottom. Arrows point down only.

pub mod access;
pub mod api;
pub mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod hsm;
pub mod ims;
pub mod init;
pub mod keycache;
pub mod keyring;
pub mod party;
pub mod pki;
pub mod problem;
pub mod relay;
pub mod secret;
pub mod signing;
pub mod states;
pub mod store;
pub mod subscriber;
pub mod sweeper;
#[cfg(test)]
pub mod testkit;
