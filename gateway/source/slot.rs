//! The newest-frame slot between GStreamer's streaming thread and the
//! consumers: the producer never waits, the newest frame wins, every frame
//! overwritten before anyone took it is counted as dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Holds at most one frame: the newest not yet taken.
///
/// The producer ([`Slot::put`]) holds the lock only to swap a pointer; the
/// frame it replaces is released after the lock. Consumers take at their own
/// rate with [`Slot::take_newest`] (non-blocking), [`Slot::wait_newest`]
/// (blocking, for inference threads) or [`Slot::next_frame`] (async).
/// Each frame is delivered at most once, so "newer than the last taken" is
/// simply "whatever is in the slot".
#[derive(Debug)]
pub struct Slot<T> {
    state: Mutex<SlotState<T>>,
    ready: Condvar,
    notify: tokio::sync::Notify,
    seq: AtomicU64,
    frames_in: AtomicU64,
    taken: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct SlotState<T> {
    item: Option<T>,
    last_arrival: Option<Instant>,
}

/// The slot's counters (monotonic over the camera's life, across reconnects).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SlotCounters {
    /// Frames delivered by GStreamer.
    pub frames_in: u64,
    /// Frames handed to a consumer.
    pub taken: u64,
    /// Frames overwritten before anyone took them.
    pub dropped: u64,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Slot<T> {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(SlotState {
                item: None,
                last_arrival: None,
            }),
            ready: Condvar::new(),
            notify: tokio::sync::Notify::new(),
            seq: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// A poisoned lock only means a consumer panicked while holding it for a
    /// pointer swap; the state is still consistent.
    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next frame sequence number (1, 2, …; never reused).
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Stores the newest frame; the one it replaces, if never taken, is
    /// counted as dropped. Never blocks beyond the pointer swap.
    pub(crate) fn put(&self, item: T) {
        let old = {
            let mut s = self.lock();
            s.last_arrival = Some(Instant::now());
            s.item.replace(item)
        };
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        if old.is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.ready.notify_all();
        self.notify.notify_one();
        drop(old);
    }

    /// Discards the waiting frame (counted as dropped), so that a frame from
    /// before an outage is not handed out as if it were new.
    pub(crate) fn clear(&self) {
        let old = self.lock().item.take();
        if old.is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The newest frame not yet taken, if any.
    pub fn take_newest(&self) -> Option<T> {
        let item = self.lock().item.take();
        if item.is_some() {
            self.taken.fetch_add(1, Ordering::Relaxed);
        }
        item
    }

    /// Waits up to `timeout` for a frame not yet taken (for consumers on
    /// their own threads).
    pub fn wait_newest(&self, timeout: Duration) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if let Some(item) = s.item.take() {
                self.taken.fetch_add(1, Ordering::Relaxed);
                return Some(item);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            s = self
                .ready
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for a frame not yet taken. Never resolves while the camera is
    /// down: select it against a cancellation token or a timeout.
    pub async fn next_frame(&self) -> T {
        loop {
            if let Some(item) = self.take_newest() {
                return item;
            }
            // `notify_one` stores a permit when nobody waits, so a frame put
            // between the check above and this await is not missed.
            self.notify.notified().await;
        }
    }

    pub fn counters(&self) -> SlotCounters {
        SlotCounters {
            frames_in: self.frames_in.load(Ordering::Relaxed),
            taken: self.taken.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// When the newest frame arrived (monotonic clock).
    pub fn last_arrival(&self) -> Option<Instant> {
        self.lock().last_arrival
    }

    /// Whether a frame is waiting to be taken.
    pub fn has_frame(&self) -> bool {
        self.lock().item.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn newest_wins_and_overwritten_frames_count_as_dropped() {
        let slot = Slot::new();
        assert_eq!(slot.take_newest(), None::<u32>);
        for v in 1..=5 {
            slot.put(v);
        }
        assert_eq!(slot.take_newest(), Some(5));
        assert_eq!(slot.take_newest(), None, "a frame is delivered once");
        slot.put(6);
        assert_eq!(slot.take_newest(), Some(6));
        let c = slot.counters();
        assert_eq!(
            c,
            SlotCounters {
                frames_in: 6,
                taken: 2,
                dropped: 4
            }
        );
        assert_eq!(c.frames_in, c.taken + c.dropped);
    }

    #[test]
    fn clearing_drops_the_waiting_frame() {
        let slot = Slot::new();
        slot.put(1);
        slot.clear();
        slot.clear();
        assert_eq!(slot.take_newest(), None);
        let c = slot.counters();
        assert_eq!((c.frames_in, c.taken, c.dropped), (1, 0, 1));
    }

    #[test]
    fn a_pending_frame_is_neither_taken_nor_dropped() {
        let slot = Slot::new();
        slot.put(1);
        slot.put(2);
        assert!(slot.has_frame());
        let c = slot.counters();
        assert_eq!((c.frames_in, c.taken, c.dropped), (2, 0, 1));
        assert!(slot.last_arrival().is_some());
    }

    #[test]
    fn sequence_numbers_start_at_one_and_increase() {
        let slot = Slot::<u8>::new();
        assert_eq!(slot.next_seq(), 1);
        assert_eq!(slot.next_seq(), 2);
    }

    #[test]
    fn wait_newest_times_out_then_wakes_on_put() {
        let slot = Arc::new(Slot::new());
        let t = Instant::now();
        assert_eq!(slot.wait_newest(Duration::from_millis(30)), None);
        assert!(t.elapsed() >= Duration::from_millis(30));
        let producer = {
            let slot = slot.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                slot.put(7u32);
            })
        };
        assert_eq!(slot.wait_newest(Duration::from_secs(5)), Some(7));
        producer.join().unwrap();
    }

    #[tokio::test]
    async fn next_frame_waits_for_a_newer_frame() {
        let slot = Arc::new(Slot::new());
        slot.put(1u32);
        assert_eq!(slot.next_frame().await, 1);
        // Nothing newer yet: next_frame must wait.
        let waiting = tokio::time::timeout(Duration::from_millis(30), slot.next_frame()).await;
        assert!(waiting.is_err());
        let s = slot.clone();
        let producer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            s.put(2);
            s.put(3);
        });
        let got = tokio::time::timeout(Duration::from_secs(5), slot.next_frame())
            .await
            .unwrap();
        producer.await.unwrap();
        // Either 3, or 2 if the consumer woke between the two puts; then 3 follows.
        let last = if got == 2 {
            slot.next_frame().await
        } else {
            got
        };
        assert_eq!(last, 3);
    }
}
