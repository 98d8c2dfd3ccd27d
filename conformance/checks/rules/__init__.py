"""The rules WHIP (RFC 9725) and WHEP (draft-03) share, each written once
against a ``Protocol`` (see ``checks/protocol.py``) and recorded with
``@rule``; ``whip.py`` and ``whep.py`` register them as checks of their
spec.  The differences that matter (recvonly vs sendonly answers, WHEP's
406 counter-offer, the stream a viewer must POST to) are handled in the
open, from the protocol's fields.

The rules record themselves on import, and the order they are recorded in
is the order they run in: keep the imports in this order, do not sort them.
"""

# isort: off
from . import post, discovery, negotiation, resource, access
# isort: on

__all__ = ["post", "discovery", "negotiation", "resource", "access"]  # noqa: RUF022
