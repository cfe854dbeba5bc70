//! A worker thread that ends before the edge asks it to stop must not pass unnoticed: the kernel
//! would go on handing its SO_REUSEPORT sockets' share of datagrams to nobody, and `home_worker`
//! would go on sending it 1/N of new calls. Each worker thread carries a [`Lifeline`]; its end,
//! by error or by panic, reaches the control loop, which stops the edge with a non-zero exit
//! (and `/readyz` false meanwhile) so that the orchestrator replaces the pod.

use tokio::sync::{mpsc, watch};

/// Why a worker ended early.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("its event loop could not start: {0}")]
    Runtime(std::io::Error),
    #[error("its sockets could not join the event loop: {0}")]
    Sockets(std::io::Error),
    #[error("it panicked")]
    Panicked,
    #[error("its event loop returned before shutdown")]
    Returned,
}

impl WorkerError {
    /// A low-cardinality name for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            WorkerError::Runtime(_) => "runtime",
            WorkerError::Sockets(_) => "sockets",
            WorkerError::Panicked => "panicked",
            WorkerError::Returned => "returned",
        }
    }
}

/// A worker that ended early, and why.
#[derive(Debug)]
pub struct WorkerDeath {
    pub index: usize,
    pub error: WorkerError,
}

/// Held by a worker thread for its whole life; reports an early end (its drop during a panic
/// included) unless the edge was already shutting down.
pub struct Lifeline {
    index: usize,
    deaths: mpsc::UnboundedSender<WorkerDeath>,
    shutdown: watch::Receiver<bool>,
    reported: bool,
}

impl Lifeline {
    pub fn new(
        index: usize,
        deaths: mpsc::UnboundedSender<WorkerDeath>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            index,
            deaths,
            shutdown,
            reported: false,
        }
    }

    /// The worker's body returned `result`: an error, or a return without shutdown, is a death.
    pub fn ended(mut self, result: Result<(), WorkerError>) {
        let error = match result {
            Err(e) => e,
            Ok(()) => WorkerError::Returned,
        };
        self.report(error);
    }

    fn report(&mut self, error: WorkerError) {
        self.reported = true;
        if *self.shutdown.borrow() {
            return;
        }
        // The control loop may be gone already (the edge is stopping): nothing left to tell.
        let _ = self.deaths.send(WorkerDeath {
            index: self.index,
            error,
        });
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        if !self.reported {
            self.report(WorkerError::Panicked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels() -> (
        mpsc::UnboundedSender<WorkerDeath>,
        mpsc::UnboundedReceiver<WorkerDeath>,
        watch::Sender<bool>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        (tx, rx, stop)
    }

    #[test]
    fn a_worker_that_panics_is_reported() {
        let (tx, mut rx, stop) = channels();
        let line = Lifeline::new(3, tx, stop.subscribe());
        let joined = std::thread::spawn(move || {
            let _line = line;
            panic!("worker 3 fails");
        })
        .join();
        assert!(joined.is_err());
        let death = rx.try_recv().expect("a death reported");
        assert_eq!(death.index, 3);
        assert_eq!(death.error.metric_label(), "panicked");
    }

    #[test]
    fn a_worker_whose_sockets_fail_is_reported_with_the_cause() {
        let (tx, mut rx, stop) = channels();
        let line = Lifeline::new(1, tx, stop.subscribe());
        line.ended(Err(WorkerError::Sockets(std::io::Error::other("no epoll"))));
        let death = rx.try_recv().expect("a death reported");
        assert_eq!(death.index, 1);
        assert_eq!(
            death.error.to_string(),
            "its sockets could not join the event loop: no epoll"
        );
    }

    #[test]
    fn a_worker_returning_before_shutdown_is_a_death_and_after_it_is_not() {
        let (tx, mut rx, stop) = channels();
        Lifeline::new(0, tx.clone(), stop.subscribe()).ended(Ok(()));
        assert_eq!(
            rx.try_recv().map(|d| d.error.metric_label()).ok(),
            Some("returned")
        );
        stop.send_replace(true);
        Lifeline::new(0, tx.clone(), stop.subscribe()).ended(Ok(()));
        drop(Lifeline::new(1, tx, stop.subscribe()));
        assert!(
            rx.try_recv().is_err(),
            "a stop the edge asked for is no death"
        );
    }
}
