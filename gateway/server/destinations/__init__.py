"""Where released transfers go: one module per kind of destination, parsed once from the URL.

Importing the package registers every kind (:mod:`.twin`, :mod:`.https`);
:func:`destination` picks one by the transfer's ``encrypt`` mode.
"""

from __future__ import annotations

from gateway.server.destinations import https, twin
from gateway.server.destinations.base import Destination, Endpoint, destination, endpoint

__all__ = ["Destination", "Endpoint", "destination", "endpoint", "https", "twin"]
