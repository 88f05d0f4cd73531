//! A frozen, flooding or panicking worker never holds an app thread.
