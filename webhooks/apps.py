"""Webhooks: the outbox of events for partners and the workers that deliver it.

Its own app because it is a boundary of its own: the ledger, the rules and the campaigns
only *write* outbox rows (``webhook_emit``) inside their own transactions, and know nothing
of endpoints, signatures, HTTP or retries; everything that leaves the process over the
network lives here, behind that one function.
"""

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"
