"""WebRTC ingest and relay, ICE (host addresses, STUN/TURN servers and their credentials),
and the per-track media paths (video frames, audio hops)."""
