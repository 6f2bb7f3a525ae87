//! Cost engine (being written).
