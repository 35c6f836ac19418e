"""Who may do what: HR users, their roles and org units, passwords, two-factor login, API
tokens and the principal a request acts as.

What belongs here is the policy and the credentials' arithmetic (hashing, TOTP, scoping);
where accounts are kept is ``store/accounts.py``, and how a request proves who it is (cookies,
CSRF, bearer tokens) is ``api/auth.py``.
"""
