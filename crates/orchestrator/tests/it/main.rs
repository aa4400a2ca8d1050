//! Integration tests of the `bot-bottle` CLI, run as a real process.

mod supervise;
