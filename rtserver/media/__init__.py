"""Media in and out: WebRTC ingest and relay, ICE (host addresses, STUN/TURN servers and
their credentials), the session clock, and the per-track media paths (the time-based frame
sampler, audio hops).

Media here is decoded, sampled and handed on through bounded hand-offs; what is measured
from it is ``perception/``'s, and no media is ever stored.
"""
