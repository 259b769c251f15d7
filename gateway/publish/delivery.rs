//! The publisher's delivery bookkeeping, without I/O: what was handed to
//! rumqttc in order, which packet id carries which outbox row, which rows
//! are acknowledged and wait to be deleted, and when to send again from the
//! start. Time comes in as `now`, so tests drive it without waiting; the
//! publisher loop (`publisher.rs`) does the SQLite and MQTT work around it.
//!
//! rumqttc assigns packet ids itself and reports each publish it puts on
//! the wire as `Outgoing::Publish(pkid)`, in the order the requests were
//! handed to it (a packet-id collision shows as `Outgoing::AwaitAck(pkid)`
//! first and the publish after the old ack). So what was handed over is a
//! FIFO, popped on each of those events into a map `pkid → handed`; a
//! PUBACK then names the row.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What was handed to rumqttc, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handed {
    Row {
        seq: i64,
    },
    /// Status and replies: not from the outbox.
    Direct,
}

/// Delivered rows are deleted in batches: this many, or after this long.
pub(crate) const ACK_BATCH: usize = 128;
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(20);

#[derive(Debug)]
pub(crate) struct Delivery {
    /// Outstanding publishes at most (`mqtt.max_in_flight`).
    window: usize,
    fifo: VecDeque<Handed>,
    in_flight: HashMap<u16, Handed>,
    collided: Option<Handed>,
    /// Highest `seq` handed over (or skipped) on this connection.
    cursor: i64,
    acked: Vec<i64>,
    first_ack: Option<Instant>,
    /// A transient PUBACK failure: send from the start again once idle.
    rewind_after: Option<Instant>,
}

impl Delivery {
    pub(crate) fn new(window: usize) -> Self {
        Self {
            window,
            fifo: VecDeque::new(),
            in_flight: HashMap::new(),
            collided: None,
            cursor: 0,
            acked: Vec::new(),
            first_ack: None,
            rewind_after: None,
        }
    }

    /// A new connection: nothing in flight, the outbox is sent again from
    /// its first undelivered row.
    pub(crate) fn connected(&mut self) {
        self.lost();
        self.cursor = 0;
    }

    /// The connection is gone: what rumqttc held is void.
    pub(crate) fn lost(&mut self) {
        self.fifo.clear();
        self.in_flight.clear();
        self.collided = None;
    }

    /// The highest `seq` handed over or skipped on this connection.
    pub(crate) fn cursor(&self) -> i64 {
        self.cursor
    }

    /// A publish was queued in rumqttc.
    pub(crate) fn handed(&mut self, h: Handed) {
        if let Handed::Row { seq } = h {
            self.cursor = self.cursor.max(seq);
        }
        self.fifo.push_back(h);
    }

    /// A row was dropped instead of sent (expired, invalid, too large).
    pub(crate) fn skipped(&mut self, seq: i64) {
        self.cursor = self.cursor.max(seq);
    }

    /// `Outgoing::AwaitAck`: the next publish waits for an old packet id.
    pub(crate) fn on_await_ack(&mut self) {
        if let Some(h) = self.fifo.pop_front() {
            self.collided = Some(h);
        }
    }

    /// `Outgoing::Publish(pkid)`: the oldest handed publish is on the wire.
    /// A QoS 0 row (`pkid` 0) is delivered there and then: its `seq`.
    pub(crate) fn on_sent(&mut self, pkid: u16) -> Option<i64> {
        // None: from before a reconnect (not expected: the FIFO is cleared).
        let handed = self.collided.take().or_else(|| self.fifo.pop_front())?;
        if pkid == 0 {
            return match handed {
                Handed::Row { seq } => Some(seq),
                Handed::Direct => None,
            };
        }
        self.in_flight.insert(pkid, handed);
        None
    }

    /// `Incoming::PubAck(pkid)`: what it acknowledges, if we know it.
    pub(crate) fn on_puback(&mut self, pkid: u16) -> Option<Handed> {
        self.in_flight.remove(&pkid)
    }

    /// A row is done with (delivered, or refused for good): to be deleted.
    pub(crate) fn ack(&mut self, seq: i64, now: Instant) {
        self.acked.push(seq);
        self.first_ack.get_or_insert(now);
    }

    /// Rows waiting to be deleted.
    pub(crate) fn acked(&self) -> &[i64] {
        &self.acked
    }

    /// Whether the acknowledged rows should be deleted now: a full batch,
    /// nothing more in flight, or the oldest waited [`ACK_DELAY`].
    pub(crate) fn flush_due(&self, now: Instant) -> bool {
        !self.acked.is_empty()
            && (self.acked.len() >= ACK_BATCH
                || self.in_flight.is_empty()
                || self.first_ack.is_some_and(|t| now >= t + ACK_DELAY))
    }

    /// The acknowledged rows were deleted.
    pub(crate) fn flushed(&mut self) {
        self.acked.clear();
        self.first_ack = None;
    }

    /// Deleting failed: kept, tried again after [`ACK_DELAY`].
    pub(crate) fn flush_failed(&mut self, now: Instant) {
        self.first_ack = Some(now);
    }

    /// The broker did not take a row this time: send from the start again
    /// once nothing is in flight, not before `at`.
    pub(crate) fn rewind_at(&mut self, at: Instant) {
        self.rewind_after = Some(at);
    }

    fn idle(&self) -> bool {
        self.fifo.is_empty() && self.in_flight.is_empty()
    }

    /// Whether to send from the start again now (the caller deletes the
    /// acknowledged rows first, then calls [`Delivery::rewind`]).
    pub(crate) fn rewind_due(&self, now: Instant) -> bool {
        self.rewind_after.is_some_and(|t| now >= t) && self.idle()
    }

    pub(crate) fn rewind(&mut self) {
        self.cursor = 0;
        self.rewind_after = None;
    }

    /// Publishes that may be handed over now.
    pub(crate) fn room(&self) -> usize {
        let busy = self.fifo.len() + self.in_flight.len() + usize::from(self.collided.is_some());
        self.window.saturating_sub(busy)
    }

    /// Handed over and not yet acknowledged (the `in_flight` counter).
    pub(crate) fn in_flight(&self) -> usize {
        self.fifo.len() + self.in_flight.len()
    }

    /// Anything still waiting for the broker.
    pub(crate) fn busy(&self) -> bool {
        !self.idle() || self.collided.is_some()
    }

    /// The earliest of `d` and this bookkeeping's own timers (the batch
    /// delay; a rewind, once idle: acknowledgements wake the loop before).
    pub(crate) fn deadline(&self, d: Instant) -> Instant {
        let mut d = d;
        if let Some(t) = self.first_ack {
            d = d.min(t + ACK_DELAY);
        }
        if let Some(t) = self.rewind_after
            && self.idle()
        {
            d = d.min(t);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64) -> Handed {
        Handed::Row { seq }
    }

    #[test]
    fn pubacks_name_rows_in_the_order_they_were_handed_over() {
        let mut d = Delivery::new(4);
        d.connected();
        d.handed(row(1));
        d.handed(Handed::Direct);
        d.handed(row(2));
        assert_eq!((d.room(), d.cursor(), d.in_flight()), (1, 2, 3));
        assert_eq!(d.on_sent(7), None);
        assert_eq!(d.on_sent(8), None);
        assert_eq!(d.on_sent(9), None);
        assert_eq!(d.on_puback(9), Some(row(2)));
        assert_eq!(d.on_puback(8), Some(Handed::Direct));
        assert_eq!(d.on_puback(8), None, "an ack only once");
        assert_eq!(d.on_puback(7), Some(row(1)));
        assert!(!d.busy());
        assert_eq!(d.room(), 4);
    }

    #[test]
    fn a_packet_id_collision_keeps_the_order() {
        let mut d = Delivery::new(4);
        d.handed(row(1));
        d.handed(row(2));
        d.on_await_ack();
        assert_eq!(d.room(), 2, "the collided publish still counts");
        assert_eq!(d.on_sent(5), None);
        assert_eq!(d.on_sent(6), None);
        assert_eq!(d.on_puback(5), Some(row(1)));
        assert_eq!(d.on_puback(6), Some(row(2)));
    }

    #[test]
    fn qos0_rows_are_delivered_when_sent_and_stale_events_are_ignored() {
        let mut d = Delivery::new(2);
        d.handed(row(3));
        assert_eq!(d.on_sent(0), Some(3));
        d.handed(Handed::Direct);
        assert_eq!(d.on_sent(0), None);
        assert_eq!(d.on_sent(4), None, "nothing handed: ignored");
        assert_eq!(d.on_puback(4), None);
    }

    #[test]
    fn acks_are_flushed_by_batch_by_idleness_or_after_the_delay() {
        let t0 = Instant::now();
        let mut d = Delivery::new(300);
        for s in 1..=3 {
            d.handed(row(s));
            d.on_sent(s as u16);
        }
        assert_eq!(d.on_puback(1), Some(row(1)));
        d.ack(1, t0);
        assert!(!d.flush_due(t0), "others in flight, delay not over");
        assert_eq!(d.deadline(t0 + Duration::from_secs(9)), t0 + ACK_DELAY);
        assert!(d.flush_due(t0 + ACK_DELAY));
        d.flush_failed(t0 + ACK_DELAY);
        assert!(!d.flush_due(t0 + ACK_DELAY));
        assert!(d.flush_due(t0 + ACK_DELAY * 2));
        d.on_puback(2);
        d.on_puback(3);
        d.ack(2, t0);
        d.ack(3, t0);
        assert!(d.flush_due(t0), "nothing in flight: at once");
        assert_eq!(d.acked(), [1, 2, 3]);
        d.flushed();
        assert!(!d.flush_due(t0 + Duration::from_secs(1)));
        for s in 0..ACK_BATCH as i64 {
            d.handed(row(10 + s));
            d.on_sent(1000 + s as u16);
        }
        for s in 0..ACK_BATCH as i64 {
            d.ack(10 + s, t0);
            if (s as usize) < ACK_BATCH - 1 {
                assert!(!d.flush_due(t0));
            }
        }
        assert!(d.flush_due(t0), "a full batch: at once");
    }

    #[test]
    fn a_rewind_waits_for_its_time_and_an_idle_window() {
        let t0 = Instant::now();
        let mut d = Delivery::new(4);
        d.handed(row(5));
        d.on_sent(1);
        d.rewind_at(t0 + Duration::from_secs(1));
        let later = t0 + Duration::from_secs(2);
        assert!(!d.rewind_due(later), "one still in flight");
        assert_eq!(
            d.deadline(later + Duration::from_secs(60)),
            later + Duration::from_secs(60)
        );
        d.on_puback(1);
        assert!(!d.rewind_due(t0), "too early");
        assert_eq!(
            d.deadline(t0 + Duration::from_secs(60)),
            t0 + Duration::from_secs(1)
        );
        assert!(d.rewind_due(later));
        assert_eq!(d.cursor(), 5);
        d.rewind();
        assert_eq!(d.cursor(), 0);
        assert!(!d.rewind_due(later));
    }

    #[test]
    fn a_lost_connection_voids_what_was_in_flight_and_a_new_one_starts_over() {
        let mut d = Delivery::new(2);
        d.handed(row(1));
        d.handed(row(2));
        d.on_sent(1);
        assert_eq!(d.room(), 0);
        d.lost();
        assert_eq!((d.room(), d.in_flight(), d.cursor()), (2, 0, 2));
        assert_eq!(d.on_puback(1), None, "an ack from the old session");
        d.connected();
        assert_eq!(d.cursor(), 0);
        d.skipped(4);
        assert_eq!(d.cursor(), 4);
    }
}
