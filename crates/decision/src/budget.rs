//! Shared budgets: the arithmetic of a rate budget (a token bucket) and of a concurrency budget,
//! in exact integers. `grant_tasks.lua` and `complete_tasks.lua` (through `lib.lua`'s `bucket_*`
//! helpers) compute the very same numbers in Redis, and the simulator uses these functions, so
//! a workload's budget behaves in `switchyard sim` as it does live (tests/budget_scripts.rs
//! compares the two).
//!
//! A rate budget of `limit` units per `period_ms` with bucket size `burst` keeps one number, its
//! *level*, scaled by the period: `level = tokens * period_ms`. Scaled so, refilling is an integer
//! (`elapsed_ms * limit`), and no rounding ever happens: every amount stays below 2^53, where
//! Lua's doubles are exact integers (the config refuses budgets that could leave that range,
//! [`MAX_SCALED`]). The level is capped at `burst * period_ms` and may go below zero (debt) when
//! a completion reports more usage than was drawn; debt is paid back by the refill before any
//! new draw is allowed, and is never deeper than one burst.

/// The largest scaled level any budget may reach, `burst * period_ms` (and `limit * period_ms`):
/// 2^50, so sums of two of them stay exact in a double.
pub const MAX_SCALED: i64 = 1 << 50;

/// A rate budget's definition: `limit` units per `period_ms`, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: i64,
    pub period_ms: i64,
    pub burst: i64,
}

/// A rate budget's state: the scaled level at the time `at_ms` (of the clock that judges it:
/// Redis's live, the simulated one in the simulator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub level: i64,
    pub at_ms: i64,
}

/// What a draw finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    /// Allowed; the bucket after the draw.
    Taken(Bucket),
    /// Not yet: the draw is allowed `wait_ms` from now if nothing else draws first.
    Wait { wait_ms: i64 },
    /// Never: the draw is larger than the bucket (`burst`).
    TooLarge,
}

/// `ceil(a / b)` for `a >= 0`, `b > 0`.
fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

impl Rate {
    /// The full bucket, scaled.
    pub fn cap(&self) -> i64 {
        self.burst.saturating_mul(self.period_ms)
    }

    /// A new bucket, full, at `now_ms`.
    pub fn full(&self, now_ms: i64) -> Bucket {
        Bucket {
            level: self.cap(),
            at_ms: now_ms,
        }
    }

    /// The bucket refilled up to `now_ms` (a clock that went back refills nothing).
    pub fn refill(&self, b: Bucket, now_ms: i64) -> Bucket {
        let elapsed = (now_ms - b.at_ms).max(0);
        let room = self.cap() - b.level;
        let level = if room <= 0 {
            b.level
        } else if elapsed >= ceil_div(room, self.limit) {
            self.cap()
        } else {
            b.level + elapsed * self.limit
        };
        Bucket {
            level,
            at_ms: now_ms.max(b.at_ms),
        }
    }

    /// Tries to draw `amount` units at `now_ms`.
    pub fn draw(&self, b: Bucket, now_ms: i64, amount: i64) -> Draw {
        if amount > self.burst {
            return Draw::TooLarge;
        }
        let b = self.refill(b, now_ms);
        let need = amount * self.period_ms;
        if b.level >= need {
            Draw::Taken(Bucket {
                level: b.level - need,
                at_ms: b.at_ms,
            })
        } else {
            Draw::Wait {
                wait_ms: ceil_div(need - b.level, self.limit),
            }
        }
    }

    /// Reconciles a draw of `drawn` units with the `used` units actually spent: the difference is
    /// given back (capped at the bucket) or charged (down to at most one burst of debt).
    pub fn reconcile(&self, b: Bucket, now_ms: i64, drawn: i64, used: i64) -> Bucket {
        let b = self.refill(b, now_ms);
        let level = (b.level + (drawn - used) * self.period_ms).clamp(-self.cap(), self.cap());
        Bucket {
            level,
            at_ms: b.at_ms,
        }
    }

    /// Whole units available now (0 in debt).
    pub fn available(&self, b: Bucket, now_ms: i64) -> i64 {
        (self.refill(b, now_ms).level / self.period_ms).max(0)
    }

    /// Whole units owed now (0 when not in debt).
    pub fn debt(&self, b: Bucket, now_ms: i64) -> i64 {
        let level = self.refill(b, now_ms).level;
        if level >= 0 {
            0
        } else {
            ceil_div(-level, self.period_ms)
        }
    }
}

/// A concurrency budget: at most `limit` units held (a unit per running task by default).
/// Returns the holdings after taking `amount`, or `None` when that would pass the limit.
pub fn hold(limit: i64, held: i64, amount: i64) -> Option<i64> {
    (held + amount <= limit).then_some(held + amount)
}

/// Holdings after `amount` is released (never below zero).
pub fn release(held: i64, amount: i64) -> i64 {
    (held - amount).max(0)
}

/// A task's draws as its hash stores them (the `budgets` field): `name=amount,name=amount`, in
/// the order given. Budget names hold neither `=` nor `,` (the config and the submit check).
pub fn encode_draws(draws: &[(String, u64)]) -> String {
    draws
        .iter()
        .map(|(name, amount)| format!("{name}={amount}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The draws back from [`encode_draws`]; a garbled part is skipped.
pub fn parse_draws(encoded: &str) -> Vec<(String, u64)> {
    encoded
        .split(',')
        .filter_map(|part| {
            let (name, amount) = part.split_once('=')?;
            Some((name.to_string(), amount.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TPM: Rate = Rate {
        limit: 60_000,
        period_ms: 60_000,
        burst: 6_000,
    };

    #[test]
    fn a_full_bucket_gives_its_burst_then_waits_for_the_refill() {
        let b = TPM.full(0);
        let Draw::Taken(b) = TPM.draw(b, 0, 6_000) else {
            panic!("a full bucket gives its burst")
        };
        assert_eq!(TPM.available(b, 0), 0);
        // 1000 tokens per second: 1500 tokens in 1.5 s.
        assert_eq!(TPM.draw(b, 0, 1_500), Draw::Wait { wait_ms: 1_500 });
        assert!(matches!(
            TPM.draw(b, 1_499, 1_500),
            Draw::Wait { wait_ms: 1 }
        ));
        assert!(matches!(TPM.draw(b, 1_500, 1_500), Draw::Taken(_)));
    }

    #[test]
    fn the_refill_stops_at_the_burst_and_a_clock_going_back_adds_nothing() {
        let b = Bucket {
            level: 0,
            at_ms: 1_000,
        };
        assert_eq!(TPM.refill(b, 10_000_000).level, TPM.cap());
        assert_eq!(TPM.refill(b, 0), b);
        assert_eq!(TPM.available(b, 1_000 + 2_000), 2_000);
    }

    #[test]
    fn a_draw_larger_than_the_burst_never_fits() {
        assert_eq!(TPM.draw(TPM.full(0), 0, 6_001), Draw::TooLarge);
    }

    #[test]
    fn reconciling_refunds_unused_and_charges_extra_into_bounded_debt() {
        let Draw::Taken(b) = TPM.draw(TPM.full(0), 0, 3_000) else {
            panic!()
        };
        let refunded = TPM.reconcile(b, 0, 3_000, 1_000);
        assert_eq!(TPM.available(refunded, 0), 5_000);
        let charged = TPM.reconcile(b, 0, 3_000, 8_000);
        assert_eq!(TPM.available(charged, 0), 0);
        assert_eq!(TPM.debt(charged, 0), 2_000);
        // Paid back by the refill: 2 s of debt, then 1 s for a 1000-token draw.
        assert_eq!(TPM.draw(charged, 0, 1_000), Draw::Wait { wait_ms: 3_000 });
        let deep = TPM.reconcile(b, 0, 0, 1_000_000);
        assert_eq!(TPM.debt(deep, 0), TPM.burst);
    }

    #[test]
    fn over_any_window_the_bucket_gives_at_most_burst_plus_the_rate() {
        // Drawing 100 whenever allowed, for 5 minutes, by the millisecond.
        let mut b = TPM.full(0);
        let mut grants = Vec::new();
        for now in 0..300_000 {
            if let Draw::Taken(next) = TPM.draw(b, now, 100) {
                b = next;
                grants.push(now);
            }
        }
        for (i, &start) in grants.iter().enumerate() {
            let within = grants[i..]
                .iter()
                .take_while(|&&t| t < start + 60_000)
                .count();
            assert!(
                within as i64 * 100 <= TPM.burst + TPM.limit,
                "{within} at {start}"
            );
        }
        // In the steady state, exactly the rate.
        let last_minute = grants.iter().filter(|&&t| t >= 240_000).count();
        assert_eq!(last_minute as i64 * 100, TPM.limit);
    }

    #[test]
    fn draws_round_trip_through_their_stored_form() {
        let draws = vec![("openai-tpm".to_string(), 3000), ("gpu".to_string(), 1)];
        assert_eq!(encode_draws(&draws), "openai-tpm=3000,gpu=1");
        assert_eq!(parse_draws(&encode_draws(&draws)), draws);
        assert!(parse_draws("").is_empty());
    }

    #[test]
    fn a_concurrency_budget_holds_at_most_its_limit() {
        assert_eq!(hold(2, 1, 1), Some(2));
        assert_eq!(hold(2, 2, 1), None);
        assert_eq!(release(2, 1), 1);
        assert_eq!(release(0, 1), 0);
    }
}
