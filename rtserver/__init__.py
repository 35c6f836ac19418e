"""rtserver: a low-latency real-time video interview analysis server.

Data flows: WebRTC track -> time sampler -> kernels -> per-second aggregator -> bus -> observers.
"""

__version__ = "0.1.0"
