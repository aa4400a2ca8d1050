//! `bot-bottle supervise` driven as a process (being built).
