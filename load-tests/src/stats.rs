//! What the clients record while they run: HDR histograms (microseconds) and counters.
//!
//! Totals cover the whole run; a second set of latency histograms is swapped out every tick by
//! the sampler to draw latency over time. Clients record through one mutex per histogram set:
//! at the rates two cores allow (tens of thousands of events a second) it is not contended.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One hour in µs: anything longer is clamped (and would be a failure anyway).
const MAX_US: u64 = 3_600_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// The histograms a run fills.
#[derive(Clone)]
pub struct Hists {
    /// TCP connect start to `welcome`.
    pub connect: Histogram<u64>,
    /// `start` sent to `assigned` received (visitor side).
    pub time_to_agent: Histogram<u64>,
    /// Visitor message send to agent receipt.
    pub v2a: Histogram<u64>,
    /// Agent message send to visitor receipt.
    pub a2v: Histogram<u64>,
    /// Reconnect storm: socket dropped to session resumed (welcome, replay, resends acked).
    pub resume: Histogram<u64>,
}

impl Default for Hists {
    fn default() -> Self {
        Self {
            connect: histogram(),
            time_to_agent: histogram(),
            v2a: histogram(),
            a2v: histogram(),
            resume: histogram(),
        }
    }
}

pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_US));
}

/// Counters, all monotonic except `open`.
#[derive(Default)]
pub struct Counters {
    pub connect_attempts: AtomicU64,
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    /// Sockets open right now.
    pub open: AtomicU64,
    pub sent: AtomicU64,
    pub delivered_v2a: AtomicU64,
    pub delivered_a2v: AtomicU64,
    pub acks: AtomicU64,
    pub duplicate_acks: AtomicU64,
    pub chats_started: AtomicU64,
    pub assigned: AtomicU64,
    pub queued: AtomicU64,
    pub closed: AtomicU64,
    pub dropped_sockets: AtomicU64,
}

impl Counters {
    pub fn delivered(&self) -> u64 {
        self.delivered_v2a.load(Ordering::Relaxed) + self.delivered_a2v.load(Ordering::Relaxed)
    }
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Everything clients record into.
pub struct Recorder {
    pub totals: Mutex<Hists>,
    /// Delivery latency (both directions) since the last tick, for the time series.
    pub tick_latency: Mutex<Histogram<u64>>,
    pub counters: Counters,
    /// Errors by code: `error` frames' `code`, connect failures, unexpected closes.
    pub errors: Mutex<BTreeMap<String, u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            totals: Mutex::default(),
            tick_latency: Mutex::new(histogram()),
            counters: Counters::default(),
            errors: Mutex::default(),
        }
    }

    pub fn error(&self, code: &str) {
        *self
            .errors
            .lock()
            .unwrap()
            .entry(code.to_string())
            .or_default() += 1;
    }

    pub fn connect(&self, took: Duration) {
        record(
            &mut self.totals.lock().unwrap().connect,
            took.as_micros() as u64,
        );
    }

    pub fn time_to_agent(&self, took: Duration) {
        record(
            &mut self.totals.lock().unwrap().time_to_agent,
            took.as_micros() as u64,
        );
    }

    pub fn resume(&self, took: Duration) {
        record(
            &mut self.totals.lock().unwrap().resume,
            took.as_micros() as u64,
        );
    }

    /// A delivered message whose text carried its send time.
    pub fn delivery(&self, to_agent: bool, latency_us: u64) {
        {
            let mut t = self.totals.lock().unwrap();
            record(if to_agent { &mut t.v2a } else { &mut t.a2v }, latency_us);
        }
        record(&mut self.tick_latency.lock().unwrap(), latency_us);
    }

    /// The latency histogram since the last call, replaced by an empty one.
    pub fn take_tick_latency(&self) -> Histogram<u64> {
        std::mem::replace(&mut *self.tick_latency.lock().unwrap(), histogram())
    }
}

/// A histogram's percentiles, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// A histogram as base64 of its HdrHistogram V2 encoding, so runs of several generator
/// processes can be merged exactly (`parley-load merge`).
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("serialising into memory");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// # Errors
/// Not base64 or not a V2 histogram.
pub fn decode(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("bad histogram: {e:?}"))?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_round_trip() {
        let mut h = histogram();
        for v in [10, 200, 3_000, 40_000] {
            record(&mut h, v);
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(Summary::of(&back).max, Summary::of(&h).max);
    }
}
