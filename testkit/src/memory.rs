//! The fake memory probe: a value a test sets, or a model the simulator drives.
//!
//! Why both in one type: unit tests set the resident size by hand around a threshold;
//! the simulator computes it from its leak model at the current simulated time. One
//! probe keeps the core's memory watchdog tested against one fake.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use steadfast_core::env::MemoryProbe;

type Model = Arc<dyn Fn() -> u64 + Send + Sync>;

enum Source {
    Fixed(u64),
    Model(Model),
}

/// A settable or model-driven memory probe. Cheap to clone; clones share the source.
#[derive(Clone)]
pub struct FakeMemory {
    source: Arc<Mutex<Source>>,
}

impl Default for FakeMemory {
    fn default() -> Self {
        Self {
            source: Arc::new(Mutex::new(Source::Fixed(0))),
        }
    }
}

impl fmt::Debug for FakeMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.lock() {
            Source::Fixed(bytes) => f.debug_tuple("FakeMemory").field(bytes).finish(),
            Source::Model(_) => f.write_str("FakeMemory(model)"),
        }
    }
}

impl FakeMemory {
    /// A probe that reports whatever `model` computes at each reading.
    pub fn driven_by(model: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        let memory = Self::default();
        memory.drive(model);
        memory
    }

    fn lock(&self) -> MutexGuard<'_, Source> {
        self.source.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports `bytes` from now on (replacing a model).
    pub fn set(&self, bytes: u64) {
        *self.lock() = Source::Fixed(bytes);
    }

    /// Reports what `model` computes from now on.
    pub fn drive(&self, model: impl Fn() -> u64 + Send + Sync + 'static) {
        *self.lock() = Source::Model(Arc::new(model));
    }
}

impl MemoryProbe for FakeMemory {
    fn resident_bytes(&self) -> u64 {
        let model = match &*self.lock() {
            Source::Fixed(bytes) => return *bytes,
            Source::Model(model) => model.clone(),
        };
        // Called without the lock, so a model may read other fakes freely.
        model()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn set_values_and_models_take_turns() {
        let memory = FakeMemory::default();
        assert_eq!(memory.resident_bytes(), 0);
        memory.set(7);
        assert_eq!(memory.clone().resident_bytes(), 7);
        let leaked = Arc::new(AtomicU64::new(100));
        let l = leaked.clone();
        memory.drive(move || l.fetch_add(1, Ordering::SeqCst));
        assert_eq!(
            (memory.resident_bytes(), memory.resident_bytes()),
            (100, 101)
        );
        memory.set(1);
        assert_eq!(memory.resident_bytes(), 1);
    }
}
