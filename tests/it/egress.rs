//! In-image tests: egress.
