//! [`PendingTable`]: the requests in flight of one worker, by id.
//!
//! Ids are handed out in increasing order as requests are made, and most answers come back
//! roughly in that order, so the table is a ring indexed by `id - base` rather than a hash map:
//! inserting and removing are a few instructions and touch memory that is already in cache.

use std::collections::VecDeque;

pub(super) struct PendingTable<T> {
    /// The id of `slots[0]`.
    base: u64,
    /// One entry per id from `base` on; `None` once that request ended.
    slots: VecDeque<Option<T>>,
    len: usize,
}

impl<T> PendingTable<T> {
    pub(super) fn new() -> Self {
        PendingTable {
            base: 0,
            slots: VecDeque::new(),
            len: 0,
        }
    }

    /// The id the next [`push`](Self::push) takes.
    pub(super) fn next_id(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// Adds a request under the next id, and returns that id.
    pub(super) fn push(&mut self, value: T) -> u64 {
        let id = self.next_id();
        if self.slots.is_empty() {
            // Nothing in flight: start the ring at this id, whatever came before.
            self.base = id;
        }
        self.slots.push_back(Some(value));
        self.len += 1;
        id
    }

    /// Takes request `id` out, if it is in flight.
    pub(super) fn remove(&mut self, id: u64) -> Option<T> {
        let index = usize::try_from(id.checked_sub(self.base)?).ok()?;
        let value = self.slots.get_mut(index)?.take()?;
        self.len -= 1;
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(value)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes every request out.
    pub(super) fn drain(&mut self) -> Vec<T> {
        let next = self.next_id();
        let taken = self.slots.drain(..).flatten().collect();
        self.base = next;
        self.len = 0;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_removal_in_any_order_leaves_nothing_behind() {
        let mut table = PendingTable::new();
        let ids: Vec<u64> = (0..5).map(|i| table.push(i * 10)).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4]);
        assert_eq!(table.remove(3), Some(30));
        assert_eq!(table.remove(3), None);
        assert_eq!(table.remove(1), Some(10));
        assert_eq!(table.remove(0), Some(0));
        // 0 and 1 gone from the front: the ring starts at 2.
        assert_eq!(table.base, 2);
        assert_eq!(table.len(), 2);
        assert_eq!(table.remove(99), None);
        assert_eq!(table.remove(2), Some(20));
        assert_eq!(table.remove(4), Some(40));
        assert!(table.is_empty());
        assert!(table.slots.is_empty());
        // Ids keep increasing after the table emptied.
        assert_eq!(table.push(7), 5);
        assert_eq!(table.drain(), vec![7]);
        assert_eq!(table.push(8), 6);
    }
}
