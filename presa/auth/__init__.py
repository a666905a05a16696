"""Accounts, roles and API tokens: passwords hashed with argon2, bearer tokens stored hashed, expiring and revocable."""
