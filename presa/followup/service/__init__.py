"""The follow-up's operations on the store: each takes a session, checks, writes, audits, and never commits.

- ``scope``: which patients may be processed (a signed care pact in force), as SQL for the set-based steps
- ``reconcile``: :func:`reconcile_flows` (later months' flows → executions, outcomes, transitions),
  :func:`mark_done`
- ``worklist``: :func:`refresh_worklist`, :func:`list_items` (filters, keyset pages), :func:`assign`,
  :func:`snooze`, :func:`close`
- ``booking``: schedules, closures, slots; :func:`book`, :func:`reschedule`, :func:`cancel`, :func:`book_plan`
- ``reminders``: contact points and opt-outs; the outbox (enqueue, claim, mark sent)
- ``contacts``: :func:`log_contact`
- ``transitions``: :func:`open_transition`
"""
