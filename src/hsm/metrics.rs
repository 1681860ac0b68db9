//! Prometheus collectors of the HSM layer.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use super::HsmError;

#[derive(Clone)]
pub struct HsmMetrics {
    pub op_seconds: HistogramVec,
    pub errors: IntCounterVec,
    pub recoveries: IntCounter,
    pub pool_timeouts: IntCounter,
    pub sessions_idle: IntGauge,
    pub sessions_in_use: IntGauge,
    pub sessions_max: IntGauge,
}

impl HsmMetrics {
    pub fn new() -> Result<HsmMetrics, prometheus::Error> {
        Ok(HsmMetrics {
            op_seconds: HistogramVec::new(
                HistogramOpts::new("tmcs_hsm_operation_seconds", "HSM operation latency").buckets(
                    vec![
                        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                        0.1, 0.25, 1.0,
                    ],
                ),
                &["op"],
            )?,
            errors: IntCounterVec::new(
                Opts::new("tmcs_hsm_errors_total", "HSM operations that failed"),
                &["op", "kind"],
            )?,
            recoveries: IntCounter::new(
                "tmcs_hsm_recoveries_total",
                "Times the session pool was rebuilt after a lost session or login",
            )?,
            pool_timeouts: IntCounter::new(
                "tmcs_hsm_pool_timeouts_total",
                "Operations that found no free HSM session in time",
            )?,
            sessions_idle: IntGauge::new("tmcs_hsm_sessions_idle", "Idle pooled HSM sessions")?,
            sessions_in_use: IntGauge::new("tmcs_hsm_sessions_in_use", "HSM sessions in use")?,
            sessions_max: IntGauge::new("tmcs_hsm_sessions_max", "Size of the HSM session pool")?,
        })
    }

    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.op_seconds.clone()))?;
        registry.register(Box::new(self.errors.clone()))?;
        registry.register(Box::new(self.recoveries.clone()))?;
        registry.register(Box::new(self.pool_timeouts.clone()))?;
        registry.register(Box::new(self.sessions_idle.clone()))?;
        registry.register(Box::new(self.sessions_in_use.clone()))?;
        registry.register(Box::new(self.sessions_max.clone()))?;
        Ok(())
    }

    pub(crate) fn observe(&self, op: &str, elapsed: Duration, err: Option<&HsmError>) {
        self.op_seconds
            .with_label_values(&[op])
            .observe(elapsed.as_secs_f64());
        if let Some(e) = err {
            self.errors.with_label_values(&[op, e.kind()]).inc();
        }
    }

    pub(crate) fn set_pool(&self, idle: usize, in_use: usize, max: usize) {
        let g = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.sessions_idle.set(g(idle));
        self.sessions_in_use.set(g(in_use));
        self.sessions_max.set(g(max));
    }
}
