//! [`Waiters`]: the one map from a correlation id to whoever waits for the answer, shared by the
//! client library (coordinator replies) and the inter-agent protocol (handoff verdicts, resource
//! grants, synchronous responses). Register with `expect` before sending, so no answer can
//! arrive unheard; the receiving task hands the answer over with `deliver`.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{Error, ErrorKind};

pub(crate) struct Waiters<T> {
    waiting: Mutex<HashMap<String, oneshot::Sender<T>>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Waiters<T> {
    /// Registers interest in the first answer correlated to `id`; call before sending.
    pub(crate) fn expect(&self, id: &str) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        self.with_map(|waiting| waiting.insert(id.to_string(), tx));
        rx
    }

    pub(crate) fn forget(&self, id: &str) {
        self.with_map(|waiting| waiting.remove(id));
    }

    /// Whoever waits on `id`, taken out of the map (for a receiver that must settle something
    /// before handing the answer over).
    pub(crate) fn take(&self, id: Option<&str>) -> Option<oneshot::Sender<T>> {
        id.and_then(|id| self.with_map(|waiting| waiting.remove(id)).flatten())
    }

    /// Hands `answer` to whoever waits on `id`; gives it back when nobody does.
    pub(crate) fn deliver(&self, id: Option<&str>, answer: T) -> Result<(), T> {
        match self.take(id) {
            Some(waiter) => waiter.send(answer),
            None => Err(answer),
        }
    }

    /// Waits for the answer registered with [`Waiters::expect`], then forgets `id`.
    pub(crate) async fn wait(
        &self,
        id: &str,
        rx: oneshot::Receiver<T>,
        timeout: Duration,
    ) -> Result<T, Error> {
        let result = tokio::time::timeout(timeout, rx).await;
        self.forget(id);
        match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Error::new(
                ErrorKind::Shutdown,
                "closed while waiting for an answer",
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("no answer to {id} within {timeout:?}"),
            )),
        }
    }

    /// Runs `f` on the map. A poisoned lock (a panic elsewhere while holding it) still holds a
    /// consistent map: every operation on it is a single insert or remove.
    fn with_map<R>(
        &self,
        f: impl FnOnce(&mut HashMap<String, oneshot::Sender<T>>) -> R,
    ) -> Option<R> {
        Some(f(&mut lock(&self.waiting)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_reaches_its_waiter_once_and_strangers_are_given_back() {
        let waiters = Waiters::<u32>::default();
        let rx = waiters.expect("m1");
        assert_eq!(waiters.deliver(Some("other"), 7), Err(7));
        assert_eq!(waiters.deliver(Some("m1"), 1), Ok(()));
        assert_eq!(waiters.deliver(Some("m1"), 2), Err(2), "delivered once");
        let got = waiters.wait("m1", rx, Duration::from_secs(1)).await;
        assert_eq!(got.ok(), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_times_out_and_forgets() {
        let waiters = Waiters::<u32>::default();
        let rx = waiters.expect("m1");
        let got = waiters.wait("m1", rx, Duration::from_millis(10)).await;
        assert_eq!(got.err().map(|e| e.kind()), Some(ErrorKind::Timeout));
        assert_eq!(waiters.deliver(Some("m1"), 1), Err(1), "forgotten");
    }
}
