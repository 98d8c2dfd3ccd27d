"""WHIP/WHEP gateway for Janus.

Layers, top to bottom: ``http`` (resources) -> ``core`` (domain) -> ``janus``
(the backend), with ``sdp`` used by the domain.  ``clients`` holds the aiortc
peers of the CLI (an optional extra), ``web`` the static pages.
"""
