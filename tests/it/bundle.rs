//! In-image tests: bundle.
