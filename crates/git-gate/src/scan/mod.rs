//! The git side of secret scanning (being built).
