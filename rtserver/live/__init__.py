"""One session's lifecycle, from the candidate's offer to the final message.

- ``runtime.py``: what every session of a process shares, and how it is built;
- ``session.py``: one live session: its connection, reconnects after a drop, its ticker,
  and its end; ``link.py``: one connection and the media paths draining its tracks;
- ``seconds.py``: each summarised second published in order; ``publisher.py``: a message's
  log position, store, then bus;
- ``questions.py``: the question timeline; ``hints.py``: live hints to the candidate;
- ``manager.py``: the sessions of one process, capacity, and recovery after a crash.

Media handling is ``media/``'s, measuring ``perception/``'s, judging ``scoring/``'s; HTTP is
``api/``'s, and running sessions in several processes is ``server/``'s.
"""
