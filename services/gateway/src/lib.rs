//! padlock-gateway (being written).
