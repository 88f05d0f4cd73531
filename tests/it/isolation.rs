//! What a worker process inherits from its app: descriptors and environment; and the handshake
//! connection taken by another process; forwarding stderr to an app whose stderr is full.
