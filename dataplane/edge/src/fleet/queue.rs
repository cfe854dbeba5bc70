//! The workers' way to the store task: a queue they push to without waking anyone while the
//! task is busy. The task takes everything queued at once, and after a batch rests a moment
//! ([`GATHER`]) so that, under load, what the workers queue meanwhile goes in one wake and one
//! pipeline instead of one wake per message; an idle task is woken by the first message.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// How long the task lets messages gather after a batch.
pub const GATHER: Duration = Duration::from_millis(1);

pub struct Queue<T> {
    items: Mutex<Vec<T>>,
    /// The task waits on `notify`: the next push wakes it.
    sleeping: AtomicBool,
    notify: Notify,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            items: Mutex::new(Vec::new()),
            sleeping: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }
}

impl<T> Queue<T> {
    /// Queues `item`; wakes the task only if it waits.
    pub fn push(&self, item: T) {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(item);
        if self.sleeping.swap(false, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }

    /// Everything queued now (maybe nothing).
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.items.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Everything queued, waiting for at least one item.
    pub async fn next_batch(&self) -> Vec<T> {
        loop {
            let batch = self.take();
            if !batch.is_empty() {
                return batch;
            }
            self.sleeping.store(true, Ordering::Release);
            // A push between `take` and here left a permit in `notify`: no wake is lost.
            let batch = self.take();
            if !batch.is_empty() {
                self.sleeping.store(false, Ordering::Release);
                return batch;
            }
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_task_is_woken_by_the_first_push_and_takes_the_rest_with_it() {
        let q = std::sync::Arc::new(Queue::default());
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.next_batch().await })
        };
        tokio::task::yield_now().await;
        q.push(1);
        q.push(2);
        let got = waiter.await.expect("joined");
        assert!(!got.is_empty() && got.len() <= 2);
        let rest = q.take();
        assert_eq!(got.len() + rest.len(), 2);
        q.push(3);
        assert_eq!(q.next_batch().await, vec![3], "queued before the wait");
    }
}
