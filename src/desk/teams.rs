//! Teams, which categories route to them, and each category's first-response target.
//!
//! Built once from the validated configuration; the engines consult it to give a new
//! conversation its [`Target`], to know an agent's teams, and to say whether a category is
//! answered right now (business hours, someone online).

use std::collections::HashMap;
use std::time::Duration;

use crate::config::{Config, Hours};
use crate::domain::{AgentId, Category, TeamId, UnixMillis};
use crate::routing::Target;

#[derive(Debug, Clone)]
pub struct Team {
    pub id: TeamId,
    pub name: String,
    /// `None`: always open.
    pub hours: Option<Hours>,
}

/// Who is in which team and where each category goes.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    teams: Vec<Team>,
    category_team: HashMap<String, TeamId>,
    targets: HashMap<String, Duration>,
    default_target: Duration,
    agent_teams: HashMap<AgentId, Vec<TeamId>>,
    escalation_team: Option<TeamId>,
}

/// Why a category is not answered right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Outside the team's business hours; the next opening, when known.
    OutsideHours { opens_at: Option<UnixMillis> },
    /// Within hours, but no agent who could take it is online.
    NobodyOnline,
}

impl Directory {
    /// From a configuration that passed [`Config::validate`]; anything invalid is skipped.
    pub fn from_config(config: &Config) -> Self {
        let team_id = |s: &str| TeamId::parse(s).ok();
        let teams = config
            .teams
            .iter()
            .filter_map(|t| {
                Some(Team {
                    id: team_id(&t.id)?,
                    name: t.name.clone(),
                    hours: t.hours.clone(),
                })
            })
            .collect();
        let category_team = config
            .categories
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), team_id(c.team.as_deref()?)?)))
            .collect();
        let targets = config
            .categories
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), c.first_response_target?)))
            .collect();
        let agent_teams = config
            .agents
            .iter()
            .filter_map(|a| {
                let id = AgentId::parse(&a.id).ok()?;
                Some((id, a.teams.iter().filter_map(|t| team_id(t)).collect()))
            })
            .collect();
        Self {
            teams,
            category_team,
            targets,
            default_target: config.desk.first_response_target,
            agent_teams,
            escalation_team: config.desk.escalation_team.as_deref().and_then(team_id),
        }
    }

    /// Where a new conversation of `category` goes.
    pub fn target_for(&self, category: &Category) -> Target {
        match self.category_team.get(category.as_str()) {
            Some(team) => Target::Team(team.clone()),
            None => Target::Any,
        }
    }

    pub fn team(&self, id: &TeamId) -> Option<&Team> {
        self.teams.iter().find(|t| &t.id == id)
    }

    pub fn teams(&self) -> &[Team] {
        &self.teams
    }

    /// A configured team's id, from what a client sent.
    pub fn parse_team(&self, s: &str) -> Option<TeamId> {
        self.teams
            .iter()
            .find(|t| t.id.as_str() == s)
            .map(|t| t.id.clone())
    }

    pub fn teams_of(&self, agent: &AgentId) -> &[TeamId] {
        self.agent_teams.get(agent).map_or(&[], Vec::as_slice)
    }

    pub fn first_response_target(&self, category: &Category) -> Duration {
        self.targets
            .get(category.as_str())
            .copied()
            .unwrap_or(self.default_target)
    }

    pub fn escalation_team(&self) -> Option<&TeamId> {
        self.escalation_team.as_ref()
    }

    /// The display name of a target's team, for visitors and agents.
    pub fn target_name(&self, target: &Target) -> Option<String> {
        target
            .team()
            .and_then(|t| self.team(t))
            .map(|t| t.name.clone())
    }

    /// Whether `target` is answered at `now`: within its team's hours (a target without hours
    /// is always within them) and with an agent accepting chats (`anyone_accepting`).
    ///
    /// # Errors
    /// [`Closed`] saying why not.
    pub fn answering(
        &self,
        target: &Target,
        now: UnixMillis,
        anyone_accepting: bool,
    ) -> Result<(), Closed> {
        if let Some(hours) = target
            .team()
            .and_then(|t| self.team(t))
            .and_then(|t| t.hours.as_ref())
        {
            if !hours.is_open(now) {
                return Err(Closed::OutsideHours {
                    opens_at: hours.next_open(now),
                });
            }
        }
        if anyone_accepting {
            Ok(())
        } else {
            Err(Closed::NobodyOnline)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CategoryConfig, HoursConfig, TeamConfig};
    use crate::routing::Categories;

    fn config() -> Config {
        let mut c = Config {
            teams: vec![
                TeamConfig {
                    id: "front".into(),
                    name: "Front line".into(),
                    hours: None,
                },
                TeamConfig {
                    id: "supervisors".into(),
                    name: "Supervisors".into(),
                    hours: Some(
                        Hours::parse(&HoursConfig {
                            timezone: "UTC".into(),
                            days: vec!["mon".into()],
                            open: "09:00".into(),
                            close: "17:00".into(),
                        })
                        .unwrap(),
                    ),
                },
            ],
            ..Config::default()
        };
        c.categories.insert(
            "security".into(),
            CategoryConfig {
                team: Some("supervisors".into()),
                first_response_target: Some(Duration::from_secs(60)),
                ..CategoryConfig::default()
            },
        );
        c.desk.escalation_team = Some("supervisors".into());
        c.validate().unwrap();
        c
    }

    #[test]
    fn categories_route_to_their_team_and_keep_their_targets() {
        let d = Directory::from_config(&config());
        let cats = Categories::new(&["security", "other"]);
        let security = cats.parse("security").unwrap();
        let other = cats.parse("other").unwrap();
        let supervisors = TeamId::parse("supervisors").unwrap();
        assert_eq!(d.target_for(&security), Target::Team(supervisors.clone()));
        assert_eq!(d.target_for(&other), Target::Any);
        assert_eq!(d.first_response_target(&security), Duration::from_secs(60));
        assert_eq!(d.first_response_target(&other), Duration::from_secs(300));
        assert_eq!(d.escalation_team(), Some(&supervisors));
        assert_eq!(
            d.target_name(&Target::Team(supervisors)).as_deref(),
            Some("Supervisors")
        );
    }

    #[test]
    fn answering_needs_hours_and_someone_online() {
        let d = Directory::from_config(&config());
        let supervisors = Target::Team(TeamId::parse("supervisors").unwrap());
        // Monday 2026-11-30 10:00 UTC: open; Tuesday: closed until next Monday 09:00.
        let monday = 1_796_032_800_000;
        assert_eq!(d.answering(&supervisors, monday, true), Ok(()));
        assert_eq!(
            d.answering(&supervisors, monday, false),
            Err(Closed::NobodyOnline)
        );
        let tuesday = monday + 24 * 3_600_000;
        assert_eq!(
            d.answering(&supervisors, tuesday, true),
            Err(Closed::OutsideHours {
                opens_at: Some(monday + 7 * 24 * 3_600_000 - 3_600_000)
            })
        );
        assert_eq!(d.answering(&Target::Any, tuesday, true), Ok(()));
    }
}
