//! The two forms of the VA space's maps (see the parent module): the span map and the hole
//! index as B-trees, and as sorted vectors while the space has few spans. Both forms answer
//! the same two traits, so allocation and free are written once, over either.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::ops::Bound;

/// What a span of the space is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Span {
    /// Free.
    Hole,
    /// A live allocation.
    Live,
}

/// What a free found around the range it freed, for the hole index.
pub(super) struct Freed {
    /// The start of the hole just before the range, which the range joined.
    pub(super) prev_hole: Option<u64>,
    /// Where the freed range ends.
    pub(super) end: u64,
    /// The hole just after the range, as (start, end), which joined it.
    pub(super) next_hole: Option<(u64, u64)>,
}

/// The span map in either form: spans keyed by start, each running to the next key (the
/// last to the end of the space, `space_end`).
pub(super) trait SpanMap {
    /// Spans held.
    fn len(&self) -> usize;
    /// Every span in address order, as (start, kind).
    fn spans(&self) -> impl Iterator<Item = (u64, Span)> + Clone + '_;
    /// The span holding `va`, as (start, end, kind).
    fn span_at(&self, va: u64, space_end: u64) -> Option<(u64, u64, Span)>;
    /// Takes `[at, end)` out of the hole that starts at `hole_start`: the range becomes a
    /// live span (replacing the hole's entry when `at` is its start) and, when the range
    /// ends before the hole did, a hole starts at `end` (`rest` true).
    fn carve(&mut self, hole_start: u64, at: u64, end: u64, rest: bool);
    /// Frees the live span that starts at `start` and merges it with the holes beside
    /// it; `None` (nothing changed) if no live span starts there.
    fn free_span(&mut self, start: u64, space_end: u64) -> Option<Freed>;
}

/// The holes by (size, start), in either form.
pub(super) trait HoleIndex {
    /// Adds a hole.
    fn insert(&mut self, hole: (u64, u64));
    /// Removes a hole it holds.
    fn remove(&mut self, hole: (u64, u64));
    /// Replaces the hole `old` it holds by `new` (a hole that shrank or grew where it was).
    fn replace(&mut self, old: (u64, u64), new: (u64, u64));
    /// The holes from `key` up, smallest first.
    fn from(&self, key: (u64, u64)) -> impl Iterator<Item = (u64, u64)> + '_;
    /// The largest hole.
    fn largest(&self) -> Option<(u64, u64)>;
}

impl SpanMap for BTreeMap<u64, Span> {
    fn len(&self) -> usize {
        BTreeMap::len(self)
    }

    fn spans(&self) -> impl Iterator<Item = (u64, Span)> + Clone + '_ {
        self.iter().map(|(&start, &span)| (start, span))
    }

    fn span_at(&self, va: u64, space_end: u64) -> Option<(u64, u64, Span)> {
        let (&start, &span) = self.range(..=va).next_back()?;
        let end = self
            .range((Bound::Excluded(start), Bound::Unbounded))
            .next()
            .map_or(space_end, |(&at, _)| at);
        Some((start, end, span))
    }

    fn carve(&mut self, _hole_start: u64, at: u64, end: u64, rest: bool) {
        // Replaces the hole's entry when the range starts where the hole did.
        self.insert(at, Span::Live);
        if rest {
            self.insert(end, Span::Hole);
        }
    }

    fn free_span(&mut self, start: u64, space_end: u64) -> Option<Freed> {
        // The range and the span before it, in one walk down the map.
        let mut before = self.range_mut(..=start).rev();
        let range = match before.next() {
            Some((&at, span)) if at == start && *span == Span::Live => span,
            _ => return None,
        };
        let prev_hole = before
            .next()
            .filter(|(_, span)| **span == Span::Hole)
            .map(|(&prev, _)| prev);
        if prev_hole.is_none() {
            // The range becomes a hole in place; else it joins the hole before it, below.
            *range = Span::Hole;
        }
        // The span after it, and where that one ends.
        let mut after = self
            .range((Bound::Excluded(start), Bound::Unbounded))
            .map(|(&at, &span)| (at, span));
        let next = after.next();
        let end = next.map_or(space_end, |(at, _)| at);
        let next_hole = match next {
            Some((next, Span::Hole)) => Some((next, after.next().map_or(space_end, |(at, _)| at))),
            _ => None,
        };
        if prev_hole.is_some() {
            self.remove(&start);
        }
        if let Some((next, _)) = next_hole {
            self.remove(&next);
        }
        Some(Freed {
            prev_hole,
            end,
            next_hole,
        })
    }
}

impl HoleIndex for BTreeSet<(u64, u64)> {
    fn insert(&mut self, hole: (u64, u64)) {
        BTreeSet::insert(self, hole);
    }

    fn remove(&mut self, hole: (u64, u64)) {
        BTreeSet::remove(self, &hole);
    }

    fn replace(&mut self, old: (u64, u64), new: (u64, u64)) {
        BTreeSet::remove(self, &old);
        BTreeSet::insert(self, new);
    }

    fn from(&self, key: (u64, u64)) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.range(key..).copied()
    }

    fn largest(&self) -> Option<(u64, u64)> {
        self.last().copied()
    }
}

/// The span map as a sorted vector, one word per span: its start with [`SpanVec::LIVE`]
/// set for a live range (starts are 4 KiB-aligned, so the low bit is free).
#[derive(Clone, Debug, Default)]
pub(super) struct SpanVec(Vec<u64>);

impl SpanVec {
    /// A map of `spans`, given in address order, with room for `capacity` spans before it
    /// reallocates.
    pub(super) fn from_spans(spans: impl Iterator<Item = (u64, Span)>, capacity: usize) -> Self {
        let mut entries = Vec::with_capacity(capacity);
        entries.extend(spans.map(|(start, span)| Self::entry(start, span)));
        Self(entries)
    }

    /// The bit that marks a live range.
    const LIVE: u64 = 1;

    fn entry(start: u64, span: Span) -> u64 {
        match span {
            Span::Hole => start,
            Span::Live => start | Self::LIVE,
        }
    }

    fn start(entry: u64) -> u64 {
        entry & !Self::LIVE
    }

    fn kind(entry: u64) -> Span {
        if entry & Self::LIVE == 0 {
            Span::Hole
        } else {
            Span::Live
        }
    }

    /// The index of the first span starting after `va`.
    fn after(&self, va: u64) -> usize {
        self.0.partition_point(|&entry| Self::start(entry) <= va)
    }

    /// Where the span at `index` ends.
    fn end_of(&self, index: usize, space_end: u64) -> u64 {
        self.0
            .get(index.wrapping_add(1))
            .map_or(space_end, |&entry| Self::start(entry))
    }
}

impl SpanMap for SpanVec {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn spans(&self) -> impl Iterator<Item = (u64, Span)> + Clone + '_ {
        self.0
            .iter()
            .map(|&entry| (Self::start(entry), Self::kind(entry)))
    }

    fn span_at(&self, va: u64, space_end: u64) -> Option<(u64, u64, Span)> {
        let index = self.after(va).checked_sub(1)?;
        let entry = *self.0.get(index)?;
        Some((
            Self::start(entry),
            self.end_of(index, space_end),
            Self::kind(entry),
        ))
    }

    fn carve(&mut self, hole_start: u64, at: u64, end: u64, rest: bool) {
        let Some(index) = self.after(hole_start).checked_sub(1) else {
            return;
        };
        let live = Self::entry(at, Span::Live);
        let hole = Self::entry(end, Span::Hole);
        // One shift of the tail for up to two new entries.
        match (at == hole_start, rest) {
            (true, false) => {
                if let Some(entry) = self.0.get_mut(index) {
                    *entry = live;
                }
            }
            (true, true) => {
                if let Some(entry) = self.0.get_mut(index) {
                    *entry = live;
                }
                self.0.insert(index + 1, hole);
            }
            (false, false) => self.0.insert(index + 1, live),
            (false, true) => {
                // Two slots at the end, the tail moved up by two in one copy.
                let tail = index + 1;
                let len = self.0.len();
                self.0.extend_from_slice(&[0, 0]);
                self.0.copy_within(tail..len, tail + 2);
                if let Some(new) = self.0.get_mut(tail..tail + 2) {
                    new.copy_from_slice(&[live, hole]);
                }
            }
        }
    }

    fn free_span(&mut self, start: u64, space_end: u64) -> Option<Freed> {
        let index = self.after(start).checked_sub(1)?;
        if *self.0.get(index)? != Self::entry(start, Span::Live) {
            return None;
        }
        let prev_hole = index
            .checked_sub(1)
            .and_then(|prev| self.0.get(prev))
            .filter(|&&entry| Self::kind(entry) == Span::Hole)
            .copied();
        let end = self.end_of(index, space_end);
        let next_hole = self
            .0
            .get(index + 1)
            .filter(|&&entry| Self::kind(entry) == Span::Hole)
            .map(|&next| (next, self.end_of(index + 1, space_end)));
        // `index` and, with a hole after it, `index + 1` are entries (read above).
        match (prev_hole.is_some(), next_hole.is_some()) {
            (false, merge_next) => {
                if let Some(entry) = self.0.get_mut(index) {
                    *entry = start;
                }
                if merge_next {
                    self.0.remove(index + 1);
                }
            }
            (true, false) => {
                self.0.remove(index);
            }
            (true, true) => {
                // The range and the hole after it go: the tail moves down by two at once.
                let len = self.0.len();
                self.0.copy_within(index + 2..len, index);
                self.0.truncate(len - 2);
            }
        }
        Some(Freed {
            prev_hole,
            end,
            next_hole,
        })
    }
}

impl HoleIndex for Vec<(u64, u64)> {
    fn insert(&mut self, hole: (u64, u64)) {
        let index = self.partition_point(|&h| h < hole);
        Vec::insert(self, index, hole);
    }

    fn remove(&mut self, hole: (u64, u64)) {
        if let Ok(index) = self.binary_search(&hole) {
            Vec::remove(self, index);
        }
    }

    fn replace(&mut self, old: (u64, u64), new: (u64, u64)) {
        let Ok(from) = self.binary_search(&old) else {
            return HoleIndex::insert(self, new);
        };
        // One rotation of the entries between the old and the new place, rather than a
        // removal and an insertion that each move half of the vector.
        let to = self.partition_point(|&h| h < new);
        if to <= from {
            if let Some(moved) = self.get_mut(to..=from) {
                moved.rotate_right(1);
                if let Some(first) = moved.first_mut() {
                    *first = new;
                }
            }
        } else if let Some(moved) = self.get_mut(from..to) {
            // `to` counts `old` itself, which is below `new`: `new` goes just before it.
            moved.rotate_left(1);
            if let Some(last) = moved.last_mut() {
                *last = new;
            }
        }
    }

    fn from(&self, key: (u64, u64)) -> impl Iterator<Item = (u64, u64)> + '_ {
        let first = self.partition_point(|&h| h < key);
        self.get(first..).unwrap_or_default().iter().copied()
    }

    fn largest(&self) -> Option<(u64, u64)> {
        self.last().copied()
    }
}
