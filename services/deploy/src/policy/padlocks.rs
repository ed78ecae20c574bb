//! The padlock table: which action carries a padlock on which environment,
//! and for how long a second factor counts ([`MaxAge`]) per action
//! (docs/design.md, "The step-up rule").

use super::{Action, Env, Requirement};

/// How old a verified second factor may be for a padlocked action; one
/// type for every service.
pub use padlock_token::MaxAge;

/// The policy for one action on one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Whether the action needs a recent second factor.
    pub padlock: bool,
    /// How old `mfa_at` may be; the action's configured value, checked
    /// only when `padlock` is set.
    pub max_age: MaxAge,
    pub requirement: Requirement,
}

impl Rule {
    /// The max age as the contract reports it (`ActionPolicy`,
    /// `CheckAccessResponse`, refusal metadata): 0 without a padlock.
    pub fn max_age_seconds(&self) -> i64 {
        if self.padlock { self.max_age.secs() } else { 0 }
    }
}

/// Which actions carry a padlock on which environment, and for how long a
/// second factor counts per action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Indexed by `Action` then `Env`.
    padlock: [[bool; 3]; Action::ALL.len()],
    /// Indexed by `Action`.
    max_age: [MaxAge; Action::ALL.len()],
}

impl Default for Policy {
    /// The default: every action carries a padlock on production and none
    /// elsewhere, except a team change, which carries one everywhere (a
    /// member added on any environment's page can reach production); a
    /// second factor counts for eight hours.
    fn default() -> Self {
        let mut padlock = [[false; 3]; Action::ALL.len()];
        for row in &mut padlock {
            row[Env::Production.index()] = true;
        }
        padlock[Action::ChangeTeam.index()] = [true; 3];
        Self {
            padlock,
            max_age: [MaxAge::DEFAULT; Action::ALL.len()],
        }
    }
}

impl Policy {
    /// Sets how old `mfa_at` may be for `action` on every environment.
    pub fn with_max_age(mut self, action: Action, max_age: MaxAge) -> Self {
        self.max_age[action.index()] = max_age;
        self
    }

    /// Puts a padlock on `action` in `env`, or takes it off.
    pub fn with_padlock(mut self, action: Action, env: Env, padlock: bool) -> Self {
        self.padlock[action.index()][env.index()] = padlock;
        self
    }

    pub fn rule(&self, action: Action, env: Env) -> Rule {
        Rule {
            padlock: self.padlock[action.index()][env.index()],
            max_age: self.max_age[action.index()],
            requirement: action.requirement(),
        }
    }

    /// Every action on every environment, in contract order (for
    /// `ListActions`).
    pub fn rules(&self) -> impl Iterator<Item = (Action, Env, Rule)> + '_ {
        Action::ALL.into_iter().flat_map(move |action| {
            Env::ALL
                .into_iter()
                .map(move |env| (action, env, self.rule(action, env)))
        })
    }
}

/// Parses one `ACTION=SECONDS` max-age override from the command line, e.g.
/// `transport_package=3600`. The seconds must be a positive integer.
pub fn parse_max_age_override(value: &str) -> Result<(Action, MaxAge), String> {
    let names = || {
        Action::ALL
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (name, seconds) = value.split_once('=').ok_or_else(|| {
        format!("expected ACTION=SECONDS, e.g. transport_package=3600, got {value:?}")
    })?;
    let action = Action::parse(name.trim())
        .ok_or_else(|| format!("unknown action {name:?}; expected one of {}", names()))?;
    let seconds: i64 = seconds
        .trim()
        .parse()
        .map_err(|_| format!("max age for {action} must be whole seconds, got {seconds:?}"))?;
    let max_age = MaxAge::from_secs(seconds)
        .ok_or_else(|| format!("max age for {action} must be positive, got {seconds}"))?;
    Ok((action, max_age))
}

/// The environment a team change is padlocked as, whichever environment
/// the caller looks at: it changes who can reach production.
pub const TEAM_CHANGE_ENV: Env = Env::Production;
