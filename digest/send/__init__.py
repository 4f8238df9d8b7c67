"""Ways of sending, picked by DIGEST_EMAIL_BACKEND from the registry in `digest/providers.py`.

`interactive=True` asks for a backend that gives up quickly, for a person waiting on a page;
each backend decides what that means for its provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from digest.providers import PROVIDERS, load
from digest.send.base import EmailBackend

if TYPE_CHECKING:  # the recipient-building child process imports the package without settings
    from digest.config import Settings


def get_backend(settings: Settings, *, interactive: bool = False) -> EmailBackend:
    """The backend named by DIGEST_EMAIL_BACKEND (validated by Settings), not yet opened."""
    backend_class = load(PROVIDERS[settings.email_backend].backend)
    backend: EmailBackend = backend_class.from_settings(settings, interactive=interactive)
    return backend
