//! Which rate to try next: doubling from the start rate until a step breaks, then bisection
//! between the highest rate that held and the lowest that broke, until they are within the
//! resolution of each other or the step budget is spent. Pure: the steps' outcomes come in,
//! rates go out, so every stop rule is tested without load.

use serde::Serialize;

/// How the rate moves between steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SearchPlan {
    /// The first step's rate, new connections per second.
    pub start_rate: f64,
    /// Done when `lowest_broken - highest_held <= resolution × highest_held`.
    pub resolution: f64,
    /// Most steps, whatever the bounds.
    pub max_steps: u32,
    /// The doubling stops here: a cap that holds ends the search.
    pub max_rate: Option<f64>,
}

/// Each raise before the first break doubles the rate, each cut before the first hold halves
/// it: as few steps as possible to bracket the limit, whatever its scale.
pub const FACTOR: f64 = 2.0;

/// Why the search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stopped {
    /// The highest rate that held and the lowest that broke are within the resolution.
    Converged,
    /// `max_steps` steps ran before that.
    StepBudget,
    /// The cap (`max_rate`) held: nothing broke up to it.
    CapHeld,
    /// Stopped by a signal; the finished steps stand.
    Interrupted,
    /// A step could not be run (its error is in the summary); the finished steps stand.
    Failed,
}

/// The bracket so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Search {
    pub highest_held: Option<f64>,
    pub lowest_broken: Option<f64>,
    pub steps: u32,
}

impl Search {
    /// Takes in one step's outcome.
    pub fn record(&mut self, rate: f64, held: bool) {
        self.steps += 1;
        if held {
            self.highest_held = Some(self.highest_held.map_or(rate, |h| h.max(rate)));
        } else {
            self.lowest_broken = Some(self.lowest_broken.map_or(rate, |b| b.min(rate)));
        }
    }

    /// The next rate to try, or why there is none.
    pub fn next(&self, plan: &SearchPlan) -> Result<f64, Stopped> {
        let next = match (self.highest_held, self.lowest_broken) {
            (None, None) => plan.start_rate,
            (Some(held), None) => match plan.max_rate {
                Some(cap) if held >= cap => return Err(Stopped::CapHeld),
                Some(cap) => (held * FACTOR).min(cap),
                None => held * FACTOR,
            },
            (None, Some(broken)) => broken / FACTOR,
            (Some(held), Some(broken)) => {
                if broken - held <= plan.resolution * held {
                    return Err(Stopped::Converged);
                }
                (held + broken) / 2.0
            }
        };
        if self.steps >= plan.max_steps {
            return Err(Stopped::StepBudget);
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(start: f64, max_steps: u32, max_rate: Option<f64>) -> SearchPlan {
        SearchPlan {
            start_rate: start,
            resolution: 0.1,
            max_steps,
            max_rate,
        }
    }

    /// Runs a search against a system whose limit is `limit` (a rate holds iff it is at most
    /// the limit) and returns the rates tried and why it stopped.
    fn against(limit: f64, plan: &SearchPlan) -> (Vec<f64>, Stopped, Search) {
        let mut search = Search::default();
        let mut tried = Vec::new();
        loop {
            match search.next(plan) {
                Ok(rate) => {
                    tried.push(rate);
                    search.record(rate, rate <= limit);
                }
                Err(stopped) => return (tried, stopped, search),
            }
        }
    }

    #[test]
    fn doubles_until_a_break_then_bisects_to_the_resolution() {
        let (tried, stopped, search) = against(19.8, &plan(5.0, 20, None));
        assert_eq!(tried, [5.0, 10.0, 20.0, 15.0, 17.5, 18.75]);
        assert_eq!(stopped, Stopped::Converged);
        assert_eq!(search.highest_held, Some(18.75));
        assert_eq!(search.lowest_broken, Some(20.0));
    }

    #[test]
    fn a_start_that_breaks_halves_until_one_holds() {
        let (tried, stopped, search) = against(3.0, &plan(20.0, 20, None));
        assert_eq!(&tried[..4], [20.0, 10.0, 5.0, 2.5]);
        assert_eq!(tried[4], 3.75);
        assert_eq!(stopped, Stopped::Converged);
        let (held, broken) = (search.highest_held.unwrap(), search.lowest_broken.unwrap());
        assert!(held <= 3.0 && broken > 3.0 && broken - held <= 0.1 * held);
    }

    #[test]
    fn the_step_budget_ends_the_search_with_the_bracket_so_far() {
        let (tried, stopped, search) = against(19.8, &plan(5.0, 4, None));
        assert_eq!(tried, [5.0, 10.0, 20.0, 15.0]);
        assert_eq!(stopped, Stopped::StepBudget);
        assert_eq!(
            (search.highest_held, search.lowest_broken),
            (Some(15.0), Some(20.0))
        );
        // Nothing ever breaks: the budget ends the doubling too.
        let (tried, stopped, _) = against(f64::INFINITY, &plan(1.0, 3, None));
        assert_eq!((tried, stopped), (vec![1.0, 2.0, 4.0], Stopped::StepBudget));
    }

    #[test]
    fn a_cap_is_tried_exactly_and_ends_the_search_when_it_holds() {
        let (tried, stopped, search) = against(1e9, &plan(50.0, 20, Some(300.0)));
        assert_eq!(tried, [50.0, 100.0, 200.0, 300.0]);
        assert_eq!(stopped, Stopped::CapHeld);
        assert_eq!(search.highest_held, Some(300.0));
        // A cap that breaks is bisected below like any other break.
        let (tried, stopped, _) = against(250.0, &plan(50.0, 20, Some(300.0)));
        assert_eq!(&tried[..5], [50.0, 100.0, 200.0, 300.0, 250.0]);
        assert_eq!(stopped, Stopped::Converged);
        // A start at the cap that holds: one step.
        let (tried, stopped, _) = against(1e9, &plan(300.0, 20, Some(300.0)));
        assert_eq!((tried, stopped), (vec![300.0], Stopped::CapHeld));
    }
}
