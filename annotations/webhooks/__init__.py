"""Webhooks: project admins register URLs that hear about events in their project.

An event is written to a durable outbox (`WebhookDelivery` rows) in the same transaction as the
change that causes it (`events.webhook_event`), so a rolled-back change sends nothing and a
worker restart loses nothing. The training worker delivers the rows (`delivery`), signed,
retried with backoff, and only to addresses that pass the SSRF checks of `safety`.
"""
