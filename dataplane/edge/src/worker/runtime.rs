//! The per-core runtime around a [`Worker`]: it owns the worker's UDP sockets, its timers'
//! sleep and the channels from TCP connections, lookups and other workers; it feeds each input
//! to the worker, stamped with the time, and carries out the [`Output`]s the worker leaves.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::{Event, Handoff, Link, Output, Shared, Worker};
use crate::call::Side;

/// A worker's sockets and the way back to it for its own tasks.
pub struct Net {
    pub public: UdpSocket,
    pub internal: UdpSocket,
    /// Where TCP connections, lookups and dials post their [`Event`]s.
    pub events: mpsc::UnboundedSender<Event>,
}

impl Net {
    fn socket(&self, side: Side) -> &UdpSocket {
        match side {
            Side::Public => &self.public,
            Side::Internal => &self.internal,
        }
    }

    /// Carries out one output of `shared`'s worker.
    fn carry_out(&self, shared: &Arc<Shared>, hot: &crate::metrics::Hot, o: Output) {
        match o {
            Output::Send { side, dest, bytes } => {
                let ok = match &dest {
                    Link::Udp(addr) => self.socket(side).try_send_to(&bytes, *addr).is_ok(),
                    Link::Tcp(_, tx) | Link::Tls(_, tx, _) => tx.send(bytes).is_ok(),
                };
                if !ok {
                    shared
                        .metrics
                        .send_errors
                        .with_label_values(&[side.label()])
                        .inc();
                    tracing::debug!(dest = %dest.addr(), "send failed");
                }
            }
            Output::Resolve { hop, lookup } => {
                let Some(resolver) = shared.resolver.clone() else {
                    // The worker answers a missing resolver itself; nothing to look up with.
                    return;
                };
                let events = self.events.clone();
                tokio::spawn(async move {
                    let result = resolver.resolve(&hop.resolve_target()).await;
                    let _ = events.send(Event::Resolved { lookup, result });
                });
            }
            Output::Dial(d) => {
                tokio::spawn(crate::transport::tcp::dial(
                    *d,
                    super::deliver(self.events.clone()),
                    shared.metrics.clone(),
                ));
            }
            Output::Claim { call, req } => {
                let events = self.events.clone();
                shared.fleet.claim(
                    req,
                    Box::new(move |verdict| {
                        let _ = events.send(Event::Claimed { call, verdict });
                    }),
                );
            }
            Output::HandOff { to, handoff } => {
                match shared.handoff.get(to).map(|tx| tx.try_send(handoff)) {
                    Some(Ok(())) => hot.handoffs_ok.inc(),
                    _ => shared
                        .metrics
                        .handoffs
                        .with_label_values(&["dropped"])
                        .inc(),
                }
            }
        }
    }
}

/// Runs `worker` on `net` until shutdown completes.
pub async fn run(
    mut worker: Worker,
    net: Net,
    mut handoff_rx: mpsc::Receiver<Handoff>,
    mut events_rx: mpsc::UnboundedReceiver<Event>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf_pub = vec![0u8; 65_535];
    let mut buf_int = vec![0u8; 65_535];
    let mut stopping = false;
    let shared = worker.shared.clone();
    let hot = shared.metrics.hot();
    worker.start(Instant::now());
    for o in worker.sip.outputs() {
        net.carry_out(&shared, &hot, o);
    }
    loop {
        let next = worker.sip.next_deadline();
        let sleep = async move {
            match next {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = net.public.recv_from(&mut buf_pub) => match r {
                Ok((n, src)) => {
                    worker.now = Instant::now();
                    worker.on_datagram(Side::Public, src, &buf_pub[..n]);
                }
                Err(e) => tracing::debug!(error = %e, "public recv"),
            },
            r = net.internal.recv_from(&mut buf_int) => match r {
                Ok((n, src)) => {
                    worker.now = Instant::now();
                    worker.on_datagram(Side::Internal, src, &buf_int[..n]);
                }
                Err(e) => tracing::debug!(error = %e, "internal recv"),
            },
            Some(h) = handoff_rx.recv() => {
                worker.now = Instant::now();
                worker.on_message(h.side, &h.src, *h.msg, false);
            }
            Some(e) = events_rx.recv() => {
                worker.now = Instant::now();
                worker.on_event(e);
            }
            _ = worker.relay.wait() => {
                worker.now = Instant::now();
                worker.on_media();
            }
            _ = sleep => {
                worker.now = Instant::now();
                worker.fire_timers();
            }
            r = shutdown.changed(), if !stopping => {
                if r.is_err() || *shutdown.borrow() {
                    stopping = true;
                    worker.now = Instant::now();
                    worker.hang_up_all();
                }
            }
        }
        for o in worker.sip.outputs() {
            net.carry_out(&shared, &hot, o);
        }
        if stopping && worker.calls.all_ended() {
            return;
        }
    }
}
