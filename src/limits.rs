//! Every bound the broker enforces, in one place.
