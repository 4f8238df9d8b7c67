"""Adapters for email providers' event webhooks: one module per provider, each speaking its
provider's language on the outside and `digest.delivery.events.NormalizedEvent` on the inside.
`base.py` is the interface every adapter implements; `digest/providers.py` names them."""
