//! `ingest.max_in_flight_bytes`: the memory the requests being handled hold,
//! charged exactly, as it is taken.
//!
//! A body is charged as its bytes arrive and its decoded copy as decoding
//! produces it, in steps of at most [`STEP_BYTES`]; nothing is reserved up
//! front from what a client declares. So a client that declares 20 MiB and
//! sends nothing holds nothing, and as every wait is for one small step, a
//! small request never queues behind a large reservation. A step that cannot
//! be had within `ingest.in_flight_wait_ms` fails the request (503), and one
//! client address may hold at most `ingest.in_flight_client_percent`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The largest single charge: a body chunk or a decoding step is at most this.
pub const STEP_BYTES: usize = 64 << 10;

/// Why memory was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("ingest is at its memory budget: retry later")]
    Busy,
    #[error("this client holds its whole share of the memory budget: retry later")]
    ClientShare,
}

impl BudgetError {
    /// The `limit` label of `cyclops_ingest_limit_hits_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Busy => "in_flight_wait",
            Self::ClientShare => "in_flight_client_share",
        }
    }
}

/// The shared budget, in KiB permits.
#[derive(Debug)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_kib: u32,
    client_kib: u32,
    wait: Duration,
    /// KiB held per client address; an address holding nothing is absent.
    clients: Mutex<HashMap<IpAddr, u32>>,
}

impl MemoryBudget {
    pub fn new(total_bytes: usize, client_percent: u8, wait: Duration) -> Arc<Self> {
        let total_kib = u32::try_from(total_bytes / 1024).unwrap_or(u32::MAX).max(1);
        let client_kib =
            u32::try_from(u64::from(total_kib) * u64::from(client_percent.min(100)) / 100).unwrap_or(total_kib).max(1);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            client_kib,
            wait,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// An empty charge for one request of `client`'s.
    pub fn charge(self: &Arc<Self>, client: IpAddr) -> Charge {
        Charge { budget: self.clone(), client, permit: None, kib: 0, bytes: 0 }
    }

    /// KiB free now (for tests).
    pub fn available_kib(&self) -> usize {
        self.permits.available_permits()
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What one request holds; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    client: IpAddr,
    permit: Option<OwnedSemaphorePermit>,
    kib: u32,
    /// Bytes charged so far; `kib` covers them rounded up.
    bytes: usize,
}

impl Charge {
    /// Charges `bytes` more, waiting at most `ingest.in_flight_wait_ms` for room.
    pub async fn add(&mut self, bytes: usize) -> Result<(), BudgetError> {
        let wanted = self.bytes.saturating_add(bytes);
        let need = u32::try_from(wanted.div_ceil(1024)).unwrap_or(u32::MAX).saturating_sub(self.kib);
        if need == 0 {
            self.bytes = wanted;
            return Ok(());
        }
        // Never more than the whole budget, or the wait could not end.
        let need = need.min(self.budget.total_kib.saturating_sub(self.kib));
        {
            let mut clients = self.budget.clients();
            let held = clients.entry(self.client).or_insert(0);
            if held.saturating_add(need) > self.budget.client_kib {
                if *held == 0 {
                    clients.remove(&self.client);
                }
                return Err(BudgetError::ClientShare);
            }
            *held += need;
        }
        let acquire = self.budget.permits.clone().acquire_many_owned(need);
        match tokio::time::timeout(self.budget.wait, acquire).await {
            Ok(Ok(permit)) => {
                match &mut self.permit {
                    Some(held) => held.merge(permit),
                    None => self.permit = Some(permit),
                }
                self.kib += need;
                self.bytes = wanted;
                Ok(())
            }
            // Timed out (the semaphore is never closed).
            _ => {
                self.release_client(need);
                Err(BudgetError::Busy)
            }
        }
    }

    /// Bytes charged so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives back `bytes` of what was charged (memory freed before the
    /// request ends).
    pub fn release(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_sub(bytes);
        let keep = u32::try_from(self.bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        let give = self.kib.saturating_sub(keep);
        if give == 0 {
            return;
        }
        if let Some(permit) = &mut self.permit {
            // Dropping the split-off part returns it to the budget.
            drop(permit.split(give as usize));
        }
        self.kib -= give;
        self.release_client(give);
    }

    fn release_client(&self, kib: u32) {
        if kib == 0 {
            return;
        }
        let mut clients = self.budget.clients();
        if let Some(held) = clients.get_mut(&self.client) {
            *held = held.saturating_sub(kib);
            if *held == 0 {
                clients.remove(&self.client);
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release_client(self.kib);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

    #[tokio::test(start_paused = true)]
    async fn bytes_are_charged_as_they_come_and_given_back_on_drop() {
        let budget = MemoryBudget::new(1 << 20, 100, Duration::from_secs(1));
        let mut charge = budget.charge(A);
        assert_eq!(budget.available_kib(), 1024, "an empty charge holds nothing");
        charge.add(100).await.expect("room");
        charge.add(100).await.expect("room");
        assert_eq!(budget.available_kib(), 1023, "200 bytes hold one KiB");
        charge.add(2000).await.expect("room");
        assert_eq!((budget.available_kib(), charge.bytes()), (1021, 2200));
        charge.release(2000);
        assert_eq!((budget.available_kib(), charge.bytes()), (1023, 200), "what is kept stays charged");
        drop(charge);
        assert_eq!(budget.available_kib(), 1024);
        assert!(budget.clients().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_budget_makes_the_next_step_wait_then_fail() {
        let budget = MemoryBudget::new(64 << 10, 100, Duration::from_millis(500));
        let mut big = budget.charge(A);
        big.add(64 << 10).await.expect("all of it");
        let mut small = budget.charge(B);
        assert_eq!(small.add(10).await, Err(BudgetError::Busy));
        drop(big);
        small.add(10).await.expect("room again");
        assert!(!budget.clients().contains_key(&A));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_step_gets_room_as_soon_as_it_is_given_back() {
        let budget = MemoryBudget::new(64 << 10, 100, Duration::from_secs(5));
        let mut big = budget.charge(A);
        big.add(64 << 10).await.expect("all of it");
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.charge(B).add(1024).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(big);
        assert_eq!(waiter.await.expect("joins"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn one_client_holds_at_most_its_share() {
        let budget = MemoryBudget::new(100 << 10, 25, Duration::from_secs(1));
        let mut first = budget.charge(A);
        first.add(25 << 10).await.expect("its share");
        let mut second = budget.charge(A);
        assert_eq!(second.add(1).await, Err(BudgetError::ClientShare));
        budget.charge(B).add(25 << 10).await.expect("another client is not held back");
        drop(first);
        second.add(1).await.expect("room in its share again");
    }
}
