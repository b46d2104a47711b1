//! Publishes awaiting the broker's confirms, found by delivery tag.
//!
//! After `confirm.select` the broker numbers a channel's publishes 1, 2, 3, ... and
//! answers each with `basic.ack` or `basic.nack`, either for one tag or, with `multiple`,
//! for every unanswered tag up to it. Answers can come out of order (a message no queue
//! takes is confirmed at once, one for a durable queue after the disk write), so each
//! publish keeps its slot until answered, and the window moves on past answered slots.

use std::collections::VecDeque;

/// Items published on one channel and not confirmed yet, in publishing order.
#[derive(Debug)]
pub struct ConfirmWindow<T> {
    /// Delivery tag of `slots[0]`.
    first_tag: u64,
    /// One slot per publish from `first_tag` on; `None` once answered.
    slots: VecDeque<Option<T>>,
}

impl<T> Default for ConfirmWindow<T> {
    fn default() -> Self {
        Self {
            first_tag: 1,
            slots: VecDeque::new(),
        }
    }
}

impl<T> ConfirmWindow<T> {
    /// Records the next publish (it gets the next delivery tag).
    pub fn push(&mut self, item: T) {
        self.slots.push_back(Some(item));
    }

    /// Slots from the oldest unanswered publish to the newest: a bound on what is unanswered.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether every publish was answered.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Applies an answer for `tag` (with `multiple`, for every unanswered tag up to it),
    /// handing each item it settles to `settled`, oldest first. Tags already answered,
    /// and a single tag that was never published, are ignored.
    pub fn settle(&mut self, tag: u64, multiple: bool, mut settled: impl FnMut(T)) {
        let Some(offset) = tag.checked_sub(self.first_tag) else {
            return;
        };
        let last = usize::try_from(offset).unwrap_or(usize::MAX);
        let range = match multiple {
            true => 0..=last.min(self.slots.len().saturating_sub(1)),
            false if last < self.slots.len() => last..=last,
            false => return,
        };
        for index in range {
            if let Some(item) = self.slots.get_mut(index).and_then(Option::take) {
                settled(item);
            }
        }
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.first_tag += 1;
        }
    }

    /// Takes every unanswered item, oldest first, and numbers from 1 again (a new
    /// channel's numbering).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.first_tag = 1;
        self.slots.drain(..).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(count: u32) -> ConfirmWindow<u32> {
        let mut window = ConfirmWindow::default();
        for item in 1..=count {
            window.push(item);
        }
        window
    }

    fn settle(window: &mut ConfirmWindow<u32>, tag: u64, multiple: bool) -> Vec<u32> {
        let mut settled = Vec::new();
        window.settle(tag, multiple, |item| settled.push(item));
        settled
    }

    #[test]
    fn multiple_answers_settle_everything_up_to_the_tag() {
        let mut window = window(5);
        assert_eq!(settle(&mut window, 3, true), [1, 2, 3]);
        assert_eq!(window.len(), 2);
        assert_eq!(
            settle(&mut window, 3, true),
            Vec::<u32>::new(),
            "answered already"
        );
        assert_eq!(
            settle(&mut window, 9, true),
            [4, 5],
            "clamped to what was published"
        );
        assert!(window.is_empty());
    }

    #[test]
    fn single_answers_out_of_order_keep_the_older_slots() {
        let mut window = window(4);
        assert_eq!(settle(&mut window, 3, false), [3]);
        assert_eq!(window.len(), 4, "1 and 2 are still unanswered");
        assert_eq!(settle(&mut window, 1, false), [1]);
        assert_eq!(window.len(), 3);
        assert_eq!(settle(&mut window, 4, true), [2, 4]);
        assert!(window.is_empty());
        assert_eq!(
            settle(&mut window, 7, false),
            Vec::<u32>::new(),
            "never published"
        );
    }

    #[test]
    fn draining_returns_the_unanswered_and_numbers_from_one() {
        let mut window = window(4);
        settle(&mut window, 2, false);
        assert_eq!(window.drain().collect::<Vec<_>>(), [1, 3, 4]);
        window.push(10);
        assert_eq!(settle(&mut window, 1, false), [10]);
    }
}
