"""presa's web edge: the FastAPI app (``app.create_app``) and its REST API under ``/api`` (``api/``).

- ``access``: the one place that decides which patients an account may see and which roles may call what
- ``deps``: one request, one transaction; the bearer token's account; the client's address for the audit
- ``errors``: every refusal as ``{"detail": ..., "errors": [...]}`` with a 4xx status
- ``schemas``: the constrained types every request body is built from
"""
