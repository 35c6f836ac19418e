"""What goes to the company's applicant tracking system (ATS): signed webhooks for completed
interviews and for the decisions people take on them.

The events are queued in the store's outbox (``store/outbox.py``) by whichever process
produces them, and delivered by one dispatcher in the server process (``webhooks.py``).
Nothing here decides anything about a candidate: it reports what a person decided.
"""
