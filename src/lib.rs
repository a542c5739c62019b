//! tidal
