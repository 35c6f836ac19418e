"""Many hosts, one deployment: stateless front ends and media nodes, joined by Redis.

- ``registry.py``: media nodes heartbeat their capacity, load and admission readings.
- ``calls.py``: front ends call the node that runs a session (request/reply on Redis lists).
- ``host.py``: a front end's session host: placement, forwarding, lost-node checks.
- ``reaper.py``: ends a lost node's sessions (``node_lost``), and no other's.
- ``node.py``: a media node's life: claim its id, finish its leftovers, heartbeat, answer.
- ``apps.py``: the front end's and the node's HTTP apps.

The store (PostgreSQL, ``--store``) holds everything durable, the bus (Redis Streams,
``--bus``) carries live messages to observers on any front end.
"""
