//! The library of `tmcs-tools`: the demo, the benchmarks, the load
//! generator, the FSP and bank simulators, and [`trip`], which starts the
//! simulators and drives payments through the relay (the demo, the relay
//! benchmark and the relay tests share it).

pub mod bench;
pub mod demo;
pub mod loadgen;
pub mod ocsp_bench;
pub mod population;
pub mod sim;
pub mod submit_bench;
pub mod trip;
