//! What the app and its workers share: the hello, the messages after it, and the frames and
//! sockets they travel in. Neither side owns this module.

pub(crate) mod codec;
pub(crate) mod hello;
pub(crate) mod messages;
pub(crate) mod region;
pub(crate) mod shape;
pub(crate) mod transport;
