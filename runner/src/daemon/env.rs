//! The daemon's environment: production in every seam, but events go to several
//! sinks (the JSON log, the metrics counters, the pinger, and tests' own taps).

use std::sync::Arc;

use crate::env::tokio::{
    DiskFs, FileDb, ProcessMemory, ProcessSpawner, SystemClock, TcpConnector, TokioEnv,
};
use steadfast_core::env::{Env, EventSink, SeededRng};
use steadfast_core::event::{Event, TracingSink};

/// Hands each event to every sink in turn. Sinks must not block (the core calls
/// `emit` inline); the slow ones (pings) queue.
#[derive(Clone, Default)]
pub struct Fanout {
    sinks: Vec<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl Fanout {
    /// Logs through `tracing`, like the core's own production sink.
    pub fn logging() -> Self {
        Self {
            sinks: vec![Arc::new(TracingSink)],
        }
    }

    /// Adds a sink.
    pub fn with(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }
}

impl EventSink for Fanout {
    fn emit(&self, event: Event) {
        if let Some((last, rest)) = self.sinks.split_last() {
            for sink in rest {
                sink.emit(event.clone());
            }
            last.emit(event);
        }
    }
}

/// [`TokioEnv`] with a [`Fanout`] event sink.
#[derive(Debug, Clone)]
pub struct DaemonEnv {
    base: TokioEnv,
    events: Arc<Fanout>,
}

impl DaemonEnv {
    /// The production environment with these event sinks, trusting the `[tls]`
    /// defaults (system and webpki roots).
    pub fn new(events: Fanout) -> Self {
        Self::with_base(TokioEnv::new(), events)
    }

    /// The production environment with this connector (built from `[tls]`, see
    /// [`TcpConnector::with_settings`]) and these event sinks.
    pub fn with_connector(connector: TcpConnector, events: Fanout) -> Self {
        Self::with_base(
            TokioEnv::with_connector(SeededRng::from_os(), connector),
            events,
        )
    }

    /// A given base environment (say, seeded) with these event sinks.
    pub fn with_base(base: TokioEnv, events: Fanout) -> Self {
        Self {
            base,
            events: Arc::new(events),
        }
    }
}

impl Env for DaemonEnv {
    type Clock = SystemClock;
    type Connector = TcpConnector;
    type Fs = DiskFs;
    type Memory = ProcessMemory;
    type Spawner = ProcessSpawner;
    type Events = Fanout;
    type Db = FileDb;

    fn clock(&self) -> &SystemClock {
        self.base.clock()
    }
    fn rng(&self) -> &SeededRng {
        self.base.rng()
    }
    fn connector(&self) -> &TcpConnector {
        self.base.connector()
    }
    fn fs(&self) -> &DiskFs {
        self.base.fs()
    }
    fn memory(&self) -> &ProcessMemory {
        self.base.memory()
    }
    fn spawner(&self) -> &ProcessSpawner {
        self.base.spawner()
    }
    fn events(&self) -> &Fanout {
        &self.events
    }
    fn db(&self) -> &FileDb {
        self.base.db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_core::event::{EventKind, MemorySink};

    #[test]
    fn every_sink_sees_every_event() {
        let a = Arc::new(MemorySink::default());
        let b = Arc::new(MemorySink::default());
        let fan = Fanout::default().with(a.clone()).with(b.clone());
        fan.emit(Event::new(EventKind::RunStarted).job("x"));
        fan.emit(Event::new(EventKind::RunFinished).job("x"));
        assert_eq!(a.snapshot().len(), 2);
        assert_eq!(a.snapshot(), b.snapshot());
    }
}
