"""Following enrolled patients up: reconciliation, work lists, booking, reminders, contacts, transitions of care.

Pure cores, testable without a database:

- ``rules``: the reconciliation windows and code families, the work-list priority and next actions, desk hours,
  quiet hours, due dates in working days
- ``availability``: a schedule's weekly openings and closures expanded into slots
- ``messages``: the Italian reminder templates (e-mail and SMS)
- ``config``: the follow-up settings (``data/followup.yaml``): desk hours, quiet hours, horizons

The edge: ``store`` (the tables, on the care store's metadata), ``service`` (the operations, each in the caller's
transaction: ``reconcile``, ``worklist``, ``booking``, ``reminders``, ``contacts``, ``transitions``) and ``worker``
(the outbox worker behind ``presa worker``, with ``transport``: SMTP and the SMS gateways).
"""
