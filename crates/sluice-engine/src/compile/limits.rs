//! `script_limits`: values outside their ranges are errors at their position.

use super::Compiler;
use sluice_flow::{ScriptLimits, Span};
use std::time::Duration;

impl Compiler<'_> {
    /// Refuses `script_limits` values outside their ranges (Rhai reads an operation limit of
    /// 0 as "unlimited", which would let a loop run until the deadline on every message, and
    /// `sluice test` forever).
    pub(super) fn check_script_limits(&mut self) {
        let limits = &self.flow.file.script_limits;
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        if let Some(deadline) = &limits.deadline {
            let (low, high) = ScriptLimits::DEADLINE_RANGE;
            if !(low..=high).contains(&deadline.value.0) {
                self.error(
                    Span::of(deadline),
                    format!(
                        "`script_limits.deadline` is {}, outside the accepted range {} to {}",
                        fmt(deadline.value.0),
                        fmt(low),
                        fmt(high)
                    ),
                    "use a deadline from 1ms to 1m (the default is 1s)",
                );
            }
        }
        if let Some(ops) = &limits.max_operations {
            let (low, high) = ScriptLimits::MAX_OPERATIONS_RANGE;
            if !(low..=high).contains(&ops.value) {
                self.error(
                    Span::of(ops),
                    format!(
                        "`script_limits.max_operations` is {}, outside the accepted range {low} to {high}",
                        ops.value
                    ),
                    "0 does not mean \"no limit\": use a limit from 1 to 1000000000000 (the default is 1000000); the deadline bounds the time either way",
                );
            }
        }
        if let Some(c) = &limits.concurrency {
            let (low, high) = ScriptLimits::CONCURRENCY_RANGE;
            if !(low..=high).contains(&c.value) {
                self.error(
                    Span::of(c),
                    format!(
                        "`script_limits.concurrency` is {}, outside the accepted range {low} to {high}",
                        c.value
                    ),
                    "use the number of script runs of this flow allowed at once (default: the number of cores less one)",
                );
            }
        }
    }
}
