//! git-gate: the bottle's git server. The agent clones from and pushes to it over smart HTTP;
//! it mirrors each configured upstream, checks every push against ref policy and a secret scan
//! of everything the push introduces, and forwards clean pushes upstream over SSH with a deploy
//! key the agent never sees.
//!
//! Code map: [`serve`] (HTTP front, http-backend as CGI), [`cgi`] (request classification and
//! CGI header parsing), [`mirror`] (bare mirrors, fetch with locking), [`hook`] (the
//! pre-receive hook: policy → scan → forward), [`policy`] (pure ref policy), [`upstream`]
//! (ssh transport and push arguments), [`proc`] (the one child-process wrapper), [`scan`]
//! (the git side of the shared secret-scanning engine), [`verdict`] (forward, hold or refuse:
//! the one decision the hook and `git-gate scan` share), [`cli`] (flags).

pub mod cgi;
pub mod cli;
pub mod hook;
pub mod mirror;
pub mod policy;
pub mod proc;
pub mod scan;
pub mod serve;
pub mod upstream;
pub mod verdict;

pub use serve::{Prepared, ServeConfig, prepare, run, serve};
