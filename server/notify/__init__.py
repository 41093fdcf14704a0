"""Telling people what happened: a transactional outbox, e-mail and signed webhooks (docs/NOTIFICATIONS.md).

`outbox.emit` is the only part the services call: it inserts one row in the caller's transaction. The
worker (`worker.Notifier`, one per server process) chooses recipients, sends, retries and dead-letters.
"""
