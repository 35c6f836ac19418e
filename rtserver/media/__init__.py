"""WebRTC ingest and the per-track media paths (video frames, audio hops)."""
