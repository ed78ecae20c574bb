//! Twilio Programmable Messaging (being written).
