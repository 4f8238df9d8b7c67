"""Adapters for email providers' event webhooks: one module per provider, each speaking its
provider's language on the outside and `digest.events.NormalizedEvent` on the inside."""
