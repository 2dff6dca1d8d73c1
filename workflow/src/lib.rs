//! HoldFast's workflow files: parsing and validating chain files into the
//! [`model`], checking submitted parameters, and rendering templates.
//!
//! One piece of code serves both the daemon (loading `workflows.d/`) and
//! `hfctl validate` (checking files offline), so the two always agree.

pub mod connection;
pub mod cron;
pub mod dates;
pub mod model;
pub mod params;
pub mod parse;
pub mod secret;
mod size;
pub mod template;
pub mod tenant;
pub mod zone;

pub use cron::{CatchUp, CronRule, Overlap};
pub use dates::{BusinessDate, DateZone};
pub use model::*;
pub use parse::{load_file, parse_chain, setting_position};
pub use size::parse_size;
