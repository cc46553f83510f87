//! The engine's two inbound queues and the order events are taken from them.
//!
//! Owns: the urgent lane (votes, chat callbacks: a person waits for each) and the normal lane
//! (alerts, executor records, ticks, everything else), and the rule that decides which event is
//! decided next: urgent events first, then normal events deferred from a batch that was cut
//! short, then new normal events, each lane first in, first out. A batch being decided is cut
//! short when an urgent event arrives ([`Lanes::cut`]), so a vote waits for at most one event's
//! decision instead of a whole batch of alerts; the rest of the batch goes back to the front of
//! the normal lane. A batch that decides an urgent event first ends with its urgent events (the
//! normal events behind them wait for the next batch), so the commit a person waits for is
//! small; never two batches in a row, so urgent events cannot starve the normal lane. Every
//! caller waits for its answer before it sends again, so taking urgent events ahead of others
//! never reorders the events of one caller.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use super::Event;

pub(super) struct Lanes {
    urgent: mpsc::Receiver<Event>,
    normal: mpsc::Receiver<Event>,
    /// Normal events taken from the lane but not decided: they go first in the next batch.
    deferred: VecDeque<Event>,
    urgent_open: bool,
    normal_open: bool,
    /// The batch being decided was ended after its urgent events ([`Lanes::end_after_urgent`]).
    ending_early: bool,
    /// The batch before it was.
    ended_early: bool,
}

impl Lanes {
    pub(super) fn new(urgent: mpsc::Receiver<Event>, normal: mpsc::Receiver<Event>) -> Lanes {
        Lanes {
            urgent,
            normal,
            deferred: VecDeque::new(),
            urgent_open: true,
            normal_open: true,
            ending_early: false,
            ended_early: false,
        }
    }

    /// The next event without waiting, in decision order.
    pub(super) fn try_next(&mut self) -> Option<Event> {
        if let Some(ev) = self.try_urgent() {
            return Some(ev);
        }
        if let Some(ev) = self.deferred.pop_front() {
            return Some(ev);
        }
        self.normal.try_recv().ok()
    }

    /// The next urgent event without waiting.
    pub(super) fn try_urgent(&mut self) -> Option<Event> {
        self.urgent.try_recv().ok()
    }

    /// Waits for the next urgent event; never resolves once the urgent lane is closed.
    pub(super) async fn next_urgent(&mut self) -> Event {
        if self.urgent_open {
            match self.urgent.recv().await {
                Some(ev) => return ev,
                None => self.urgent_open = false,
            }
        }
        std::future::pending().await
    }

    /// Whether an urgent event waits.
    pub(super) fn urgent_waiting(&self) -> bool {
        !self.urgent.is_empty()
    }

    /// Events waiting: (urgent, normal including deferred).
    #[cfg(test)]
    pub(super) fn queued(&self) -> (usize, usize) {
        (self.urgent.len(), self.deferred.len() + self.normal.len())
    }

    /// Waits for the next event; `None` once both lanes are closed and empty.
    pub(super) async fn next(&mut self) -> Option<Event> {
        if let Some(ev) = self.try_next() {
            return Some(ev);
        }
        loop {
            tokio::select! {
                biased;
                ev = self.urgent.recv(), if self.urgent_open => match ev {
                    Some(ev) => return Some(ev),
                    None => self.urgent_open = false,
                },
                ev = self.normal.recv(), if self.normal_open => match ev {
                    Some(ev) => return Some(ev),
                    None => self.normal_open = false,
                },
                else => return None,
            }
        }
    }

    /// A batch is being decided and `rest` of its events are not decided yet: if an urgent
    /// event waits, puts `rest` back at the front of the normal lane (in order) and says so.
    /// Only called once the batch decided at least one normal event, so a stream of urgent
    /// events cannot starve the normal lane.
    pub(super) fn cut(&mut self, rest: &mut VecDeque<Event>) -> bool {
        if !self.urgent_waiting() {
            return false;
        }
        for ev in rest.drain(..).rev() {
            self.deferred.push_front(ev);
        }
        true
    }

    /// An urgent event of the batch being decided was just decided and `rest` of the batch is
    /// not: the normal events among `rest` go back to the front of the normal lane (in order), so
    /// the commit a person waits for carries little else; urgent ones stay. Not in two batches in
    /// a row, so a stream of urgent events cannot starve the normal lane.
    pub(super) fn end_after_urgent(&mut self, rest: &mut VecDeque<Event>) {
        if self.ended_early || rest.iter().all(is_urgent) {
            return;
        }
        let (urgent, normal): (VecDeque<Event>, VecDeque<Event>) =
            rest.drain(..).partition(is_urgent);
        *rest = urgent;
        for ev in normal.into_iter().rev() {
            self.deferred.push_front(ev);
        }
        self.ending_early = true;
    }

    /// The batch being decided is complete: whether it ended early decides whether the next may.
    pub(super) fn sealed(&mut self) {
        self.ended_early = std::mem::take(&mut self.ending_early);
    }
}

/// Events a person waits for, taken ahead of the normal lane.
pub(super) fn is_urgent(ev: &Event) -> bool {
    matches!(
        ev,
        Event::Vote { .. }
            | Event::Chat {
                op: super::ChatOp::Callback(_),
                ..
            }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick() -> (Event, tokio::sync::oneshot::Receiver<()>) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        (Event::Tick { reply: Some(reply) }, rx)
    }

    /// Which of the ticks an event is, by its reply channel.
    fn which(ev: Event, rxs: &mut [tokio::sync::oneshot::Receiver<()>]) -> usize {
        let Event::Tick { reply: Some(reply) } = ev else {
            panic!("not a tick")
        };
        let _ = reply.send(());
        rxs.iter_mut()
            .position(|r| r.try_recv().is_ok())
            .expect("one of the ticks")
    }

    #[tokio::test]
    async fn urgent_events_come_first_and_a_cut_batch_goes_back_in_order() {
        let (utx, urx) = mpsc::channel(8);
        let (ntx, nrx) = mpsc::channel(16);
        let mut lanes = Lanes::new(urx, nrx);
        let mut rxs = Vec::new();
        for _ in 0..6 {
            let (ev, rx) = tick();
            ntx.try_send(ev).unwrap();
            rxs.push(rx);
        }
        // A batch of four is taken; one normal event is decided, then an urgent event arrives.
        let mut batch: VecDeque<Event> = (0..4).filter_map(|_| lanes.try_next()).collect();
        assert_eq!(batch.len(), 4);
        let first = batch.pop_front().unwrap();
        assert_eq!(which(first, &mut rxs), 0);
        assert!(!lanes.cut(&mut batch), "nothing urgent waits yet");
        assert_eq!(batch.len(), 3);
        let (vote, vote_rx) = tick();
        utx.try_send(vote).unwrap();
        assert!(lanes.cut(&mut batch));
        assert!(batch.is_empty());
        // The urgent event first, then the cut batch's events in order, then the lane's.
        rxs.push(vote_rx);
        let order: Vec<usize> = std::iter::from_fn(|| lanes.try_next())
            .map(|ev| which(ev, &mut rxs))
            .collect();
        assert_eq!(order, vec![6, 1, 2, 3, 4, 5]);
        drop((utx, ntx));
        assert!(lanes.next().await.is_none());
    }
}
