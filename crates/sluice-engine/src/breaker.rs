//! Circuit breakers, one per sink (`errors.circuit_breaker`).
//!
//! Closed: writes go through; `failures` failed writes within `window` open the circuit.
//! Open: writes fail at once (to the dead letter, or go to the fallback sink) for `open_for`.
//! Half-open: up to `probes` writes go through; if they all succeed the circuit closes, and
//! a failure opens it again. A write counts as failed after its retries.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The breaker settings of a flow.
#[derive(Clone, Copy, Debug)]
pub struct BreakerSettings {
    /// Failures within `window` that open the circuit.
    pub failures: u32,
    /// The counting window.
    pub window: Duration,
    /// How long the circuit stays open.
    pub open_for: Duration,
    /// Probe writes while half-open.
    pub probes: u32,
}

/// The state of one circuit, as logged and reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Writes go through.
    Closed,
    /// Writes fail fast.
    Open,
    /// Probes go through.
    HalfOpen,
}

impl CircuitState {
    /// The name used in logs: `closed`, `open`, `half-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}

struct Circuit {
    state: CircuitState,
    failures: VecDeque<Instant>,
    opened_at: Instant,
    probes_out: u32,
    probes_ok: u32,
    fast_failures: u64,
}

/// One sink's breaker.
pub struct Breaker {
    settings: BreakerSettings,
    circuit: Mutex<Circuit>,
    /// `sluice_circuit_state{flow, sink}`: 0 closed, 1 half-open, 2 open.
    gauge: metrics::Gauge,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker::labelled(settings, "", "")
    }

    /// A closed breaker whose state is the gauge `sluice_circuit_state{flow, sink}`.
    pub fn labelled(settings: BreakerSettings, flow: &str, sink: &str) -> Self {
        let gauge = metrics::gauge!(
            "sluice_circuit_state",
            "flow" => flow.to_owned(),
            "sink" => sink.to_owned()
        );
        gauge.set(0.0);
        Breaker {
            gauge,
            settings,
            circuit: Mutex::new(Circuit {
                state: CircuitState::Closed,
                failures: VecDeque::new(),
                opened_at: Instant::now(),
                probes_out: 0,
                probes_ok: 0,
                fast_failures: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Circuit> {
        self.circuit.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, state: CircuitState) {
        self.gauge.set(match state {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        });
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.lock().state
    }

    /// Whether a write may go to the sink now (a half-open circuit lets `probes` through).
    pub fn allow(&self) -> bool {
        let mut c = self.lock();
        if c.state == CircuitState::Open && c.opened_at.elapsed() >= self.settings.open_for {
            c.state = CircuitState::HalfOpen;
            c.probes_out = 0;
            c.probes_ok = 0;
            self.publish(CircuitState::HalfOpen);
            tracing::info!(circuit = "half-open", "circuit half-open: probing the sink");
        }
        match c.state {
            CircuitState::Closed => true,
            CircuitState::HalfOpen if c.probes_out < self.settings.probes.max(1) => {
                c.probes_out += 1;
                true
            }
            _ => {
                c.fast_failures += 1;
                false
            }
        }
    }

    /// Records the result of a write that [`Breaker::allow`] let through.
    pub fn record(&self, ok: bool, flow: &str, sink: &str) {
        let mut c = self.lock();
        let now = Instant::now();
        match (c.state, ok) {
            (CircuitState::Closed, true) => {}
            (CircuitState::Closed, false) => {
                c.failures.push_back(now);
                while c
                    .failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > self.settings.window)
                {
                    c.failures.pop_front();
                }
                if c.failures.len() as u32 >= self.settings.failures.max(1) {
                    c.state = CircuitState::Open;
                    c.opened_at = now;
                    c.failures.clear();
                    self.publish(CircuitState::Open);
                    tracing::warn!(flow = %flow, sink = %sink, circuit = "open", "circuit opened: {} failed writes within {}; failing fast for {}", self.settings.failures, humantime::format_duration(self.settings.window), humantime::format_duration(self.settings.open_for));
                }
            }
            (CircuitState::HalfOpen, true) => {
                c.probes_ok += 1;
                if c.probes_ok >= self.settings.probes.max(1) {
                    c.state = CircuitState::Closed;
                    self.publish(CircuitState::Closed);
                    tracing::info!(flow = %flow, sink = %sink, circuit = "closed", fast_failures = c.fast_failures, "circuit closed: the sink recovered");
                }
            }
            (CircuitState::HalfOpen, false) => {
                c.state = CircuitState::Open;
                c.opened_at = now;
                self.publish(CircuitState::Open);
                tracing::warn!(flow = %flow, sink = %sink, circuit = "open", "circuit opened again: a probe failed");
            }
            // A write that started before the circuit opened: its result changes nothing.
            (CircuitState::Open, _) => {}
        }
    }
}

/// The breakers of a flow's sinks, and the fallback sink.
pub struct Breakers {
    breakers: HashMap<String, Breaker>,
    /// Takes deliveries while a circuit is open.
    pub fallback: Option<String>,
}

impl Breakers {
    /// One breaker per named sink (the fallback sink gets none).
    pub fn new<'a>(
        flow: &str,
        sinks: impl IntoIterator<Item = &'a String>,
        settings: BreakerSettings,
        fallback: Option<String>,
    ) -> Self {
        let breakers = sinks
            .into_iter()
            .filter(|name| Some(*name) != fallback.as_ref())
            .map(|name| (name.clone(), Breaker::labelled(settings, flow, name)))
            .collect();
        Breakers { breakers, fallback }
    }

    /// The breaker of a sink.
    pub fn get(&self, sink: &str) -> Option<&Breaker> {
        self.breakers.get(sink)
    }

    /// Every sink's circuit state, for status reports and metrics.
    pub fn states(&self) -> Vec<(String, CircuitState)> {
        let mut states: Vec<_> = self
            .breakers
            .iter()
            .map(|(name, b)| (name.clone(), b.state()))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_fails_fast_half_opens_and_closes() {
        let b = Breaker::new(BreakerSettings {
            failures: 2,
            window: Duration::from_secs(10),
            open_for: Duration::from_millis(50),
            probes: 1,
        });
        assert!(b.allow());
        b.record(false, "f", "s");
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.allow());
        b.record(false, "f", "s");
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!b.allow(), "open fails fast");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow(), "one probe");
        assert!(!b.allow(), "only one probe at a time");
        b.record(false, "f", "s");
        assert_eq!(b.state(), CircuitState::Open);
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow());
        b.record(true, "f", "s");
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
